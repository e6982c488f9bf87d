provider "memory" {
  store = ".mlform/memory.json"
}

module "churn" {
  source = "./modules/trainer"
  name   = "churn"
  data   = "data/train.csv"
  epochs = 3
}

output "churn_url" {
  value = module.churn.url
}

output "churn_model_version" {
  value = module.churn.model_version
}
