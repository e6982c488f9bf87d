# `mlform plan --env kubernetes`: the same stack on a Kubernetes cluster.
#
#   export MLFORM_VAR_k8s_storage=s3://my-ml-bucket/{stack}/{env}
#   mlform apply --env kubernetes
#
# The cluster is the one kubectl uses (KUBECONFIG, ~/.kube/config or in-cluster) unless
# k8s_kubeconfig / k8s_context say otherwise; the pods run the image the repo's
# Dockerfile builds.  `make k8s-up` starts the test control plane (and an S3 for
# storage) and prints the variables to set; docs/kubernetes-provider.md has the rest.
default_provider = "kubernetes"

provider "kubernetes" {
  kubeconfig   = var.k8s_kubeconfig
  context      = var.k8s_context
  namespace    = var.k8s_namespace
  image        = var.k8s_image
  storage      = var.k8s_storage
  endpoint_url = var.k8s_endpoint_url
}
