"""gitops-controller: the in-cluster reconciler that keeps every Application equal to Git (pulls, syncs, heals or
reports drift). The plugin is its remote control; both stand on the same engine."""
