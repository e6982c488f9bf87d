# Quickstart: the whole ML chain in one plan.
#
# dataset -> pipeline (training run) -> model (registry version) -> endpoint -> monitor
#
# Until the `local` provider lands, this stack runs on the built-in `memory`
# provider: its "live" objects are a JSON file (.mlform/memory-<env>.json), so
# plan/apply/drift behave exactly as they will against real infrastructure.

provider "memory" {
  store = ".mlform/memory-{env}.json"
}

variable "epochs" {
  type        = number
  default     = 5
  description = "Training epochs; changing it re-runs the pipeline."

  validation {
    condition     = var.epochs > 0
    error_message = "epochs must be positive."
  }
}

locals {
  prefix = "fraud-${env.name}"
}

dataset "transactions" {
  source = "./data/transactions.csv"
  format = "csv"
  schema = { amount = "float", hour = "int", label = "int" }
  checks = { min_rows = 10, max_null_fraction = 0.01 }
  tags   = { team = "risk" }
}

training_cluster "cpu" {
  accelerator   = "cpu"
  gpus_per_node = 0
  nodes         = 1
}

pipeline "train" {
  cluster         = training_cluster.cpu
  inputs          = { train = dataset.transactions }
  entrypoint      = "train.py"
  hyperparameters = { epochs = var.epochs, lr = 0.01 }
  gate            = { metric = "accuracy", min = 0.8 }
}

model "fraud" {
  artifact  = pipeline.train.model_uri
  framework = "torch"
  stage     = "production"
}

endpoint "fraud" {
  model    = model.fraud
  replicas = 1
  rollout  = { strategy = "canary", canary_percent = 10, bake_seconds = 0 }
  capture  = { sample_percent = 100 }
  tags     = { name = "${local.prefix}-endpoint" }
}

monitor "drift" {
  endpoint  = endpoint.fraud
  baseline  = dataset.transactions
  checks    = [{ metric = "psi", threshold = 0.2 }]
  schedule  = "*/10 * * * *"
  on_breach = "retrain"
}

output "endpoint_url" {
  value = endpoint.fraud.url
}

output "model_version" {
  value = model.fraud.version
}
