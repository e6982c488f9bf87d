"""Templates for `mlform init DIR --template NAME`.

Each template maps a path in the new stack to its text.  Its spec files follow the stack
rule of `mlform.config.loader` (`*.hcl`, `*.mlform.yaml`/`.yml`/`.json` at the top level);
every other file (data, entrypoints, a `params.yaml`) is left alone by the loader.
"""

MEMORY_MAIN = '''# A minimal stack on the built-in memory provider: it keeps its "live" objects
# in a JSON file, so you can try plan/apply/drift without any infrastructure.
provider "memory" {
  store = ".mlform/memory.json"
}

variable "epochs" {
  type    = number
  default = 3
}

dataset "train" {
  source = "data/train.csv"
  format = "csv"
}

pipeline "train" {
  inputs          = { train = dataset.train }
  entrypoint      = "train.py"
  hyperparameters = { epochs = var.epochs }
}

model "clf" {
  artifact = pipeline.train.model_uri
  stage    = "production"
}

endpoint "clf" {
  model    = model.clf
  replicas = 1
}

output "url" {
  value = endpoint.clf.url
}
'''

TEMPLATES: dict[str, dict[str, str]] = {
    "memory": {
        "main.hcl": MEMORY_MAIN,
        "train.py": "# The training entrypoint; its content is part of the run fingerprint.\n",
        "data/train.csv": "x,label\n1,0\n2,1\n",
    },
}

__all__ = ["TEMPLATES"]
