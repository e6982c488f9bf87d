# `mlform plan --env staging`: its own state (.mlform/state/staging.json) and store.
default_provider = "memory"
variables = {
  epochs = 2
}
