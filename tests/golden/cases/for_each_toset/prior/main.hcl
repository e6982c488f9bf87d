provider "memory" {
  store = ".mlform/memory.json"
}

dataset "region" {
  for_each = toset(["eu", "us", "sa"])
  source   = "s3://bucket/${each.key}/train.csv"
}
