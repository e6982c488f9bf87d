"""Configuration of the `local` provider block."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlform.providers.kit.pricing import check_prices


class LocalConfig(BaseModel):
    """`provider "local" { ... }`."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(".mlform/local/{env}",
                      description="Where datasets, runs, the model registry, endpoint and monitor "
                                  "files live; relative to the stack; {env} is substituted.")
    host: str = Field("127.0.0.1", description="Address endpoints bind to.")
    python: str | None = Field(None, description="Interpreter for entrypoints and servers "
                                                 "(default: the one running mlform).")
    ready_timeout_seconds: float = Field(60.0, gt=0,
                                         description="How long to wait for a server to be ready.")
    prices: dict[str, float] | None = Field(
        None, description="USD per hour by instance or node type (an endpoint's or a "
                          "cluster's instance_type, else a cluster's accelerator, else "
                          "\"cpu\"), for the cost in plans; unset: not priced.")

    @field_validator("prices")
    @classmethod
    def _check_prices(cls, prices: dict[str, float] | None) -> dict[str, float] | None:
        return check_prices(prices)
