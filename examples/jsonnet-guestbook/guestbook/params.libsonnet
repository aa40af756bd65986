{
  name: 'guestbook-ui',
  image: 'registry.example/guestbook-ui:0.2',
  replicas: 1,
  containerPort: 80,
  servicePort: 80,
  type: 'ClusterIP',
}
