"""The `sagemaker` provider: the ML chain on Amazon SageMaker through boto3.

```hcl
provider "sagemaker" {
  region       = "eu-west-1"
  role_arn     = "arn:aws:iam::123456789012:role/mlform-sagemaker"
  bucket       = "my-ml-bucket"
  endpoint_url = "http://127.0.0.1:5000"   # optional: moto, LocalStack, a VPC endpoint
}
```

Modules: `provider` (set-up, on the provider kit), `config`, `aws` (clients, errors,
waiting), `env` (the provider's view: bucket prefix, names, ownership tags; the
handler base), `bucket` (the S3 layout), `instance_types`, and one handler per kind:
`datasets`, `clusters`, `pipelines`, `models`, `endpoints`, `monitors`;
`pulumi_export` and `pulumi_import` (the provider's half of `mlform export pulumi` and
`mlform import-state pulumi`); `drift_check` runs in AWS and is not imported.
"""

from .config import SageMakerConfig
from .provider import SageMakerProvider

__all__ = ["SageMakerProvider", "SageMakerConfig"]
