"""Configuration of the `kubernetes` provider block."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlform.providers.kit.pricing import Prices

#: the image the repository's Dockerfile builds (mlform, torch, the model server)
DEFAULT_IMAGE = "mlform:latest"


class KubernetesConfig(BaseModel):
    """`provider "kubernetes" { ... }`.

    The cluster is found the way kubectl finds it: `kubeconfig` (default: the
    ``KUBECONFIG`` variable, then ``~/.kube/config``, then the in-cluster service
    account) and `context` (default: the file's current context).  Credentials stay in
    the kubeconfig; they are never arguments.
    """

    model_config = ConfigDict(extra="forbid")

    kubeconfig: str | None = Field(None, description="Path of the kubeconfig file.")
    context: str | None = Field(None, description="Context of the kubeconfig to use.")
    namespace: str = Field("default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                           max_length=63,
                           description="Namespace of objects not tied to a training "
                                       "cluster (endpoints, models, monitors, pipelines "
                                       "without a cluster).  It must exist.")
    image: str = Field(DEFAULT_IMAGE, min_length=1,
                       description="The training and serving image (the repo's Dockerfile).")
    image_pull_policy: str = Field("IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    storage: str = Field(..., pattern=r"^s3://[^/]+(/.*)?$",
                         description="S3-compatible URI for datasets, code, artifacts and "
                                     "records; {stack} and {env} are substituted.")
    endpoint_url: str | None = Field(None, description="The storage's endpoint (MinIO, "
                                                        "a VPC endpoint); default: AWS.")
    region: str = Field("us-east-1", description="The storage's region.")
    storage_secret: str | None = Field(
        None, description="Secret in each namespace whose keys (AWS_ACCESS_KEY_ID...) pods "
                          "get as environment, to reach the storage; without it pods use "
                          "the node's or the service account's identity.")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="Labels added to every object.")
    poll_seconds: float = Field(1.0, gt=0, description="Interval between status checks "
                                                        "while waiting.")
    wait_seconds: float = Field(900.0, gt=0, description="How long a rollout, a Job or a "
                                                          "namespace deletion may take.")

    prices: Prices = None


    @field_validator("labels")
    @classmethod
    def _no_reserved(cls, labels: dict[str, str]) -> dict[str, str]:
        reserved = [k for k in labels if k.startswith("mlform.dev/")
                    or k == "app.kubernetes.io/managed-by"]
        if reserved:
            raise ValueError(f"labels {reserved} are mlform's own ownership marks")
        return labels

    def storage_uri(self, stack: str, env: str) -> str:
        return self.storage.replace("{stack}", stack).replace("{env}", env)
