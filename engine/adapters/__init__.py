"""The adapters: the Kubernetes API (kube, kubeconfig), Git (source), the renderers (render: kustomize, helm) and the
audit log's store and witnesses. They translate between the world and the core's values, and hold no rule."""
