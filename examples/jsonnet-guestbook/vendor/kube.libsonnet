// A small library of Kubernetes objects, shared by the repository's Jsonnet applications (spec.source.directory
// .jsonnet.libs: [vendor]).
{
  labels(name):: { app: name },

  service(name, port, targetPort, type='ClusterIP'):: {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: name },
    spec: {
      type: type,
      selector: $.labels(name),
      ports: [{ port: port, targetPort: targetPort }],
    },
  },

  deployment(name, image, replicas, containerPort):: {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: name },
    spec: {
      replicas: replicas,
      revisionHistoryLimit: 3,
      selector: { matchLabels: $.labels(name) },
      template: {
        metadata: { labels: $.labels(name) },
        spec: {
          containers: [{
            name: name,
            image: image,
            ports: [{ containerPort: containerPort }],
          }],
        },
      },
    },
  },
}
