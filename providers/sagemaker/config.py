"""Configuration of the `sagemaker` provider block."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# AWS Deep Learning Containers for PyTorch (account 763104351884 serves every commercial
# region).  Used when the stack names no image; `{region}` is substituted.
DEFAULT_TRAINING_IMAGE = ("763104351884.dkr.ecr.{region}.amazonaws.com/"
                          "pytorch-training:2.5.1-cpu-py311-ubuntu22.04-sagemaker")
DEFAULT_SERVING_IMAGE = ("763104351884.dkr.ecr.{region}.amazonaws.com/"
                         "pytorch-inference:2.5.1-cpu-py311-ubuntu22.04-sagemaker")


class SageMakerConfig(BaseModel):
    """`provider "sagemaker" { ... }`.  Credentials come the standard boto3 way
    (environment, shared config/`profile`, instance role); they are never arguments."""

    model_config = ConfigDict(extra="forbid")

    region: str = Field(..., min_length=1, description="AWS region, e.g. eu-west-1.")
    role_arn: str = Field(
        ..., pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$",
        description="IAM role SageMaker assumes for training jobs, models and endpoints.")
    bucket: str = Field(..., min_length=3, description="S3 bucket for datasets, code, "
                                                        "artifacts and captured requests.")
    prefix: str = Field("mlform/{stack}/{env}",
                        description="Key prefix inside the bucket; {stack} and {env} are "
                                    "substituted.")
    endpoint_url: str | None = Field(
        None, description="Send every AWS call here (moto, LocalStack, a VPC endpoint).")
    profile: str | None = Field(None, description="Shared-config profile to use.")
    training_image: str | None = Field(
        None, description="Training container image; default: the AWS PyTorch DLC.")
    serving_image: str | None = Field(
        None, description="Inference container image; default: the AWS PyTorch DLC.")
    poll_seconds: float = Field(15.0, gt=0, description="Interval between status checks "
                                                         "while waiting.")
    max_attempts: int = Field(8, ge=1, le=30, description="Attempts per AWS call; throttling "
                                                          "and 5xx answers are retried with "
                                                          "backoff.")

    def image(self, which: str) -> str:
        chosen = self.training_image if which == "training" else self.serving_image
        default = DEFAULT_TRAINING_IMAGE if which == "training" else DEFAULT_SERVING_IMAGE
        return (chosen or default).replace("{region}", self.region)
