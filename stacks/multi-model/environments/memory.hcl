# `mlform plan --env memory`: the same two modules against the in-memory provider
# (its "live" objects are a JSON file under .mlform/); its own state.
default_provider = "memory"
variables = {
  epochs = 2
}
