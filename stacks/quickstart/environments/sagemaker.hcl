# `mlform plan --env sagemaker`: the same stack on Amazon SageMaker.
#
#   export MLFORM_VAR_sagemaker_role_arn=arn:aws:iam::123456789012:role/mlform-sagemaker
#   export MLFORM_VAR_sagemaker_bucket=my-ml-bucket
#   mlform apply --env sagemaker
#
# Credentials come the standard boto3 way (environment, ~/.aws, instance role). The IAM
# permissions it needs are listed in the README ("Running on SageMaker").
default_provider = "sagemaker"

provider "sagemaker" {
  region       = var.aws_region
  role_arn     = var.sagemaker_role_arn
  bucket       = var.sagemaker_bucket
  endpoint_url = var.aws_endpoint_url
}
