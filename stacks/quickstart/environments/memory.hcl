# `mlform plan --env memory`: the same stack against the in-memory provider, whose
# "live" objects are a JSON file (.mlform/memory/memory.json). Its own state.
default_provider = "memory"
variables = {
  epochs = 2
}
