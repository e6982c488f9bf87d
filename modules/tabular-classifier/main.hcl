# tabular-classifier: the quickstart's whole chain for any csv with a label column.
#
#   dataset -> pipeline (train.py in this directory, a torch MLP)
#           -> model (registry version) -> endpoint (OIP v2) -> monitor (drift)
#
#   module "churn" {
#     source = "../../modules/tabular-classifier"
#     name   = "churn"
#     data   = "./data/churn.csv"     # relative to the stack directory
#   }
#
# See README.md in this directory.

variable "name" {
  type        = string
  description = "What the classifier is for (fraud, churn, ...): tags and the model's description."

  validation {
    condition     = length(var.name) > 0
    error_message = "name must not be empty."
  }
}

variable "data" {
  type        = string
  description = "The training csv: a path relative to the stack directory (or file://, http(s)://)."
}

variable "label" {
  type        = string
  default     = "label"
  description = "The csv column holding the class (integers 0..K-1); every other column is a feature."
}

variable "features" {
  type        = list(string)
  default     = []
  description = "Feature columns, in model input order; empty: every column but the label, in file order."
}

variable "schema" {
  type        = map(string)
  default     = null
  description = "Column types the dataset checks enforce (column -> int/float/str/bool/datetime)."
}

variable "min_rows" {
  type        = number
  default     = 100
  description = "Fewest data rows the dataset check accepts."
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

variable "hidden" {
  type        = number
  default     = 32
  description = "Width of the MLP's two hidden layers."
}

variable "lr" {
  type        = number
  default     = 0.01
  description = "Adam learning rate."
}

variable "accelerator" {
  type        = string
  default     = "cpu"
  description = "Training cluster accelerator (cpu, nvidia-h100, any-gpu, ...)."
}

variable "gpus" {
  type        = number
  default     = 0
  description = "GPUs per node; must be 0 for cpu and at least 1 otherwise."
}

variable "min_accuracy" {
  type        = number
  default     = 0.85
  description = "Gate: a run whose holdout accuracy is below this publishes no model."

  validation {
    condition     = var.min_accuracy >= 0 && var.min_accuracy <= 1
    error_message = "min_accuracy is a fraction between 0 and 1."
  }
}

variable "canary_percent" {
  type        = number
  default     = 10
  description = "Traffic share a new model version gets first (rollout strategy canary)."
}

variable "bake_seconds" {
  type        = number
  default     = 0
  description = "How long the canary is watched before it takes all the traffic."
}

variable "drift_threshold" {
  type        = number
  default     = 0.2
  description = "PSI above which a feature counts as drifted; a breach marks the pipeline stale."
}

variable "monitor_schedule" {
  type        = string
  default     = "*/10 * * * *"
  description = "When the drift monitor runs (5-field cron, local time)."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags for every resource of the module."
}

locals {
  tags = merge({ model = var.name }, var.tags)
}

dataset "data" {
  source = var.data
  format = "csv"
  schema = var.schema
  checks = { min_rows = var.min_rows, max_null_fraction = 0.01 }
  tags   = local.tags
}

training_cluster "compute" {
  accelerator   = var.accelerator
  gpus_per_node = var.gpus
  nodes         = 1
  tags          = local.tags
}

pipeline "train" {
  cluster    = training_cluster.compute
  inputs     = { train = dataset.data }
  entrypoint = "train.py"           # this module's train.py
  hyperparameters = {
    epochs   = var.epochs
    lr       = var.lr
    hidden   = var.hidden
    label    = var.label
    features = join(",", var.features)
  }
  gate = { metric = "accuracy", min = var.min_accuracy }
  tags = local.tags
}

model "classifier" {
  artifact    = pipeline.train.model_uri
  framework   = "torch"
  stage       = "production"
  description = "${var.name} classifier (tabular-classifier module)"
  tags        = local.tags
}

endpoint "classifier" {
  model    = model.classifier
  replicas = 1
  rollout  = { strategy = "canary", canary_percent = var.canary_percent, bake_seconds = var.bake_seconds }
  capture  = { sample_percent = 100 }
  tags     = local.tags
}

monitor "drift" {
  endpoint  = endpoint.classifier
  baseline  = dataset.data
  pipeline  = pipeline.train
  checks    = [{ metric = "psi", threshold = var.drift_threshold }, { metric = "error_rate", threshold = 0.05 }]
  schedule  = var.monitor_schedule
  on_breach = "retrain"
  tags      = local.tags
}

output "endpoint_url" {
  value       = endpoint.classifier.url
  description = "The model's Open Inference Protocol v2 URL: POST {endpoint_url}/infer."
}

output "model_version" {
  value       = model.classifier.version
  description = "The registry version the endpoint serves."
}

output "accuracy" {
  value       = pipeline.train.metrics.accuracy
  description = "Holdout accuracy of the published run."
}

output "dataset_digest" {
  value       = dataset.data.digest
  description = "sha256 of the training data."
}
