# Quickstart: the whole ML chain in one plan, running for real on this machine.
#
#   dataset -> pipeline (a torch training run) -> model (registry version)
#           -> endpoint (HTTP server, Open Inference Protocol v2) -> monitor (drift)
#
# `make demo` creates the data (make_data.py), then plans and applies this stack.
# `--env memory` plans the same stack against the in-memory provider (no torch needed);
# `--env sagemaker` plans and applies it on Amazon SageMaker, `--env kubernetes` on a
# Kubernetes cluster.

provider "local" {
  root = ".mlform/local/{env}"
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

# Used by environments/sagemaker.hcl only (the same stack on Amazon SageMaker); set them
# with MLFORM_VAR_sagemaker_role_arn=... and so on, or --var.
variable "aws_region" {
  type    = string
  default = "eu-west-1"
}

variable "sagemaker_role_arn" {
  type        = string
  default     = ""
  description = "IAM role SageMaker assumes (see the README's IAM section)."
}

variable "sagemaker_bucket" {
  type        = string
  default     = ""
  description = "S3 bucket for datasets, code, model artifacts and captured requests."
}

variable "aws_endpoint_url" {
  type        = string
  default     = null
  description = "Send AWS calls elsewhere (moto, LocalStack); null for AWS itself."
}

# Used by environments/kubernetes.hcl only (the same stack on a Kubernetes cluster); set
# them with MLFORM_VAR_k8s_storage=... and so on (`make k8s-up` prints them).
variable "k8s_kubeconfig" {
  type        = string
  default     = null
  description = "Kubeconfig file; null: KUBECONFIG, ~/.kube/config, then in-cluster."
}

variable "k8s_context" {
  type    = string
  default = null
}

variable "k8s_namespace" {
  type    = string
  default = "default"
}

variable "k8s_image" {
  type        = string
  default     = "mlform:latest"
  description = "The image the pods run (the repo's Dockerfile)."
}

variable "k8s_storage" {
  type        = string
  default     = ""
  description = "S3-compatible URI for datasets, code, artifacts and captured requests."
}

variable "k8s_endpoint_url" {
  type        = string
  default     = null
  description = "The storage's endpoint (MinIO, moto); null for AWS S3."
}

locals {
  prefix = "fraud-${env.name}"
}

dataset "transactions" {
  source = "./data/transactions.csv"
  format = "csv"
  schema = { amount = "float", hour = "int", merchant_risk = "float", distance_km = "float", label = "int" }
  checks = { min_rows = 1000, max_null_fraction = 0.01 }
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
  hyperparameters = { epochs = var.epochs, lr = 0.01, hidden = 32 }
  gate            = { metric = "accuracy", min = 0.85 }
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
  pipeline  = pipeline.train
  checks    = [{ metric = "psi", threshold = 0.2 }, { metric = "error_rate", threshold = 0.05 }]
  schedule  = "*/10 * * * *"
  on_breach = "retrain"
}

output "endpoint_url" {
  value = endpoint.fraud.url
}

output "model_version" {
  value = model.fraud.version
}

output "accuracy" {
  value = pipeline.train.metrics.accuracy
}
