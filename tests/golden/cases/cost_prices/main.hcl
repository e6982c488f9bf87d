# Cost in the plan: known prices (the memory provider's `prices`).  From the prior apply:
# endpoint.clf goes from 1 to 3 replicas (delta), endpoint.burst's autoscaling range
# widens to 1..4, the pipeline re-runs (new hyperparameters) priced from its last run's
# recorded duration (metrics.run_seconds = 1800: 2 nodes × $12.50 × 0.5 h), and a new
# endpoint on an instance type with no price is unknown, never zero.
provider "memory" {
  store  = ".mlform/memory.json"
  prices = { "ml.m5.large" = 0.115, "ml.g5.xlarge" = 1.5, "nvidia-h100" = 12.5 }
}

dataset "train" {
  source = "data/train.csv"
  format = "csv"
}

training_cluster "gpu" {
  accelerator         = "nvidia-h100"
  gpus_per_node       = 1
  nodes               = 2
  max_runtime_seconds = 7200
}

pipeline "train" {
  cluster         = training_cluster.gpu
  inputs          = { train = dataset.train }
  entrypoint      = "train.py"
  hyperparameters = { epochs = 4 }
  settings {
    metrics = { accuracy = 0.97, run_seconds = 1800 }
  }
}

model "clf" {
  artifact  = pipeline.train.model_uri
  framework = "torch"
}

endpoint "clf" {
  model         = model.clf
  replicas      = 3
  instance_type = "ml.m5.large"
}

endpoint "burst" {
  model         = model.clf
  instance_type = "ml.g5.xlarge"
  autoscaling   = { min = 1, max = 4 }
}

endpoint "exotic" {
  model         = model.clf
  instance_type = "ml.x9.huge"
}
