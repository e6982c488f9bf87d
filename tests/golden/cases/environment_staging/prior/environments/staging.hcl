variables = {
  replicas = 2
  stage    = "staging"
}
