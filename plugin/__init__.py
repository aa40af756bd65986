"""`kubectl gitops`: the shell's front door to the engine."""
