# Two commands do everything on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: test bench bench-peers demo venv k8s-tools tools k8s-up k8s-down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: PyPI's 2.13.0 is a CUDA build (a few GB) that also runs on
	# the CPU; pinning keeps every machine on the version the tests were run with.
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[test,local,sagemaker,kubernetes,tracking,pulumi]"
	touch $(STAMP)

venv: $(STAMP)

# The Kubernetes test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok), built with Go from the module proxy once per machine into
# .tools/k8s; the script skips the build when its stamp matches (tests/k8s/cluster).
k8s-tools:
	tests/k8s/cluster/build.sh

# actionlint (checks the shipped GitHub workflows) and opa (runs a Rego policy over a JSON
# plan), built from the Go module proxy once per machine into .tools/bin (tests/tools).
tools:
	tests/tools/build.sh

# The same cluster as the tests', left running in the background for trying the
# kubernetes environment by hand: the control plane and its kwok nodes, the pod harness
# (training and monitoring pods run as local processes) and a moto S3.  k8s-up prints the
# exports to use it; k8s-down stops it (tests/k8s/cluster/up.py; files in .tools/k8s-run).
k8s-up: $(STAMP) k8s-tools
	$(BIN)/python tests/k8s/cluster/up.py

k8s-down:
	$(BIN)/python tests/k8s/cluster/up.py --down

test: $(STAMP) k8s-tools tools
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP) k8s-tools
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/bench -s

# Side by side with the tools users would pick instead (OpenTofu, DVC, KServe, MLServer):
# each peer is built or installed once per machine into .tools/peers (nothing of theirs
# is committed), then run on the same work as mlform, interleaved (tests/bench/peers).
# PEERS="opentofu dvc serving" picks some; REPS=5 repetitions per figure.
PEERS ?=
REPS  ?= 5
bench-peers: $(STAMP)
	$(BIN)/python -m tests.bench.peers $(PEERS) --reps $(REPS)

demo: $(STAMP)
	$(BIN)/python stacks/demo.py

clean:
	rm -rf $(VENV) build *.egg-info .tools
