"""Install manifests (also read by `kubectl gitops install`); apply them with `kubectl apply -k manifests/`."""
