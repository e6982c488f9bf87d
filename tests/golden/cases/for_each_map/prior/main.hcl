provider "memory" {
  store = ".mlform/memory.json"
}

dataset "shard" {
  for_each = { a = "part-a", b = "part-b" }
  source   = "s3://bucket/${each.value}.csv"
  format   = "csv"
}

output "shard_uris" {
  value = { for k, d in dataset.shard : k => d.uri }
}
