provider "memory" {
  store = ".mlform/memory.json"
}

dataset "train" {
  source = "data/train.csv"
  format = "csv"
}

training_cluster "gpu" {
  accelerator   = "nvidia-h100"
  gpus_per_node = 1
  nodes         = 1
}

pipeline "train" {
  cluster         = training_cluster.gpu
  inputs          = { train = dataset.train }
  entrypoint      = "train.py"
  hyperparameters = { epochs = 3 }
}

model "clf" {
  artifact  = pipeline.train.model_uri
  framework = "torch"
  stage     = "production"
}

endpoint "clf" {
  model    = model.clf
  replicas = 1
}

output "url" {
  value = endpoint.clf.url
}
