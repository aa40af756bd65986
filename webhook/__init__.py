"""The drift admission webhook: the API server's front door to the engine."""
