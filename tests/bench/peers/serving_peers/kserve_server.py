"""KServe's Python model server for the serving peer benchmark: a `kserve.Model` that
loads the benchmark's TorchScript MLP and answers Open Inference Protocol v2 requests
(``POST /v2/models/NAME/infer``), started with `kserve.ModelServer`.

Runs in KServe's own venv (``.tools/peers/kserve``), never in mlform's:

    python kserve_server.py --model-path FILE --name NAME --port PORT

Settings, each chosen to match how mlform's `local` endpoint serves: one uvicorn worker
(KServe's default), gRPC off (mlform has none and it would only take CPU), bound to
127.0.0.1, one torch thread (mlform's default `torch_threads`), ``predict`` synchronous
so that it runs on the event loop as mlform's handler does, and no per-request log lines
(KServe's access log and latency log are on by default; mlform writes none).  KServe's
own HTTP stack is untouched: uvloop and httptools, which its install brings.
"""

from __future__ import annotations

import argparse
import logging
import sys

import kserve
import torch
from kserve import InferOutput, InferRequest, InferResponse
from kserve.protocol.rest import server as rest_server
from kserve.utils.utils import generate_uuid

HOST = "127.0.0.1"


class TorchScriptModel(kserve.Model):
    """The MLP's TorchScript file; input 0 as an [n, 16] FP32 tensor, output [n, 2]."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.module = None
        self.load()

    def load(self) -> bool:
        torch.set_num_threads(1)
        self.module = torch.jit.load(self.path)
        self.module.eval()
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = torch.from_numpy(payload.inputs[0].as_numpy())
        with torch.inference_mode():
            y = self.module(x).numpy()
        output = InferOutput(name="output", shape=list(y.shape), datatype="FP32")
        # JSON data rather than binary: the benchmark's bodies and answers are plain JSON.
        output.set_data_from_numpy(y, binary_data=False)
        # The response must carry an id; a request without one gets a new one, as in
        # KServe's own custom-model examples.
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name,
                             infer_outputs=[output])


def _bind_loopback() -> None:
    """KServe's REST server hard-codes host 0.0.0.0 in its uvicorn.Config; the benchmark
    serves on loopback only, so the config's host is replaced once it is built."""
    original = rest_server.RESTServer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.config.host = HOST

    rest_server.RESTServer.__init__ = init


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    # kserve parses sys.argv itself at import (parse_known_args); ours are unknown to it.
    args, _ = parser.parse_known_args(argv)
    _bind_loopback()
    model = TorchScriptModel(args.name, args.model_path)
    server = kserve.ModelServer(http_port=args.port, workers=1, enable_grpc=False,
                                enable_latency_logging=False)
    # ModelServer's constructor configured logging; only warnings from uvicorn's access log.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
