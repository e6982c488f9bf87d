"""The `sagemaker` provider: the ML chain on Amazon SageMaker through boto3.

```hcl
provider "sagemaker" {
  region       = "eu-west-1"
  role_arn     = "arn:aws:iam::123456789012:role/mlform-sagemaker"
  bucket       = "my-ml-bucket"
  endpoint_url = "http://127.0.0.1:5000"   # optional: moto, LocalStack, a VPC endpoint
}
```

Modules: `provider` (dispatch), `config`, `aws` (clients, errors, waiting), `common`
(names, tags, ownership), and one handler per kind: `datasets`, `clusters`,
`training`, `models`, `endpoints`, `monitors`.
"""

from .config import SageMakerConfig
from .provider import SageMakerProvider

__all__ = ["SageMakerProvider", "SageMakerConfig"]
