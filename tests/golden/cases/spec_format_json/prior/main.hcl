provider "memory" {
  store = ".mlform/memory.json"
}

variable "epochs" {
  type    = number
  default = 4
}

locals {
  prefix = "fraud-${var.epochs}"
  shards = { eu = "part-eu", us = "part-us" }
}

dataset "shard" {
  for_each = local.shards
  source   = "s3://bucket/${each.value}.csv"
  format   = "csv"
  tags     = { team = local.prefix }
}

training_cluster "gpu" {
  accelerator   = "nvidia-h100"
  gpus_per_node = 2
  nodes         = 1
}

pipeline "train" {
  cluster         = training_cluster.gpu
  inputs          = { for k, d in dataset.shard : k => d }
  entrypoint      = "train.py"
  hyperparameters = { epochs = var.epochs, lr = 0.01 }
}

model "clf" {
  artifact  = pipeline.train.model_uri
  framework = "torch"
  stage     = "production"
}

endpoint "clf" {
  count    = 2
  model    = model.clf
  replicas = count.index + 1

  settings {
    region = "eu-west-1"
  }

  lifecycle {
    create_before_destroy = true
    ignore_changes        = ["replicas"]
  }
}

output "urls" {
  value = endpoint.clf[*].url
}
