# Two classifiers from one module: the tabular-classifier chain (dataset -> pipeline ->
# model -> endpoint -> monitor), once for card fraud and once for subscriber churn.
#
#   python make_data.py                      # data/fraud.csv, data/churn.csv
#   mlform plan                              # the local provider: real training and serving
#   mlform plan --env memory                 # the same plan against the memory provider

provider "local" {
  root = ".mlform/local/{env}"
}

variable "epochs" {
  type        = number
  default     = 5
  description = "Training epochs of both models."
}

module "fraud" {
  source       = "../../modules/tabular-classifier"
  name         = "fraud"
  data         = "./data/fraud.csv"
  epochs       = var.epochs
  min_accuracy = 0.85
  schema       = { amount = "float", hour = "int", merchant_risk = "float", distance_km = "float", label = "int" }
  tags         = { team = "risk" }
}

module "churn" {
  source         = "../../modules/tabular-classifier"
  name           = "churn"
  data           = "./data/churn.csv"
  epochs         = var.epochs
  min_accuracy   = 0.8
  canary_percent = 20
  features       = ["tenure_months", "monthly_charges", "support_calls", "monthly_contract"]
  tags           = { team = "growth" }
}

output "fraud_url" {
  value = module.fraud.endpoint_url
}

output "churn_url" {
  value = module.churn.endpoint_url
}

output "model_versions" {
  value = { fraud = module.fraud.model_version, churn = module.churn.model_version }
}

output "accuracy" {
  value = { fraud = module.fraud.accuracy, churn = module.churn.accuracy }
}
