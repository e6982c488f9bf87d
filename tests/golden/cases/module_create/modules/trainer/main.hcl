variable "name" {
  type = string
}

variable "data" {
  type = string
}

variable "epochs" {
  type    = number
  default = 3
}

dataset "data" {
  source = var.data
  format = "csv"
}

pipeline "train" {
  inputs          = { train = dataset.data }
  entrypoint      = "train.py"
  hyperparameters = { epochs = var.epochs }
}

model "m" {
  artifact = pipeline.train.model_uri
  stage    = "production"
  tags     = { name = var.name }
}

endpoint "e" {
  model    = model.m
  replicas = 1
}

output "url" {
  value = endpoint.e.url
}

output "model_version" {
  value = model.m.version
}
