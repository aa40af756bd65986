// The guestbook UI as Jsonnet: a Service and a Deployment. Top-level arguments (spec.source.directory.jsonnet.tlas)
// override the defaults in params.libsonnet.
local kube = import 'kube.libsonnet';
local params = import 'params.libsonnet';

function(replicas=params.replicas, image=params.image)
  [
    kube.service(params.name, params.servicePort, params.containerPort, params.type),
    kube.deployment(params.name, image, replicas, params.containerPort) + {
      metadata+: { annotations: { 'guestbook.example/environment': std.extVar('environment') } },
    },
  ]
