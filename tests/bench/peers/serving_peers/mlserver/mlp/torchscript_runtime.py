"""MLServer's custom runtime for the serving peer benchmark: an `mlserver.MLModel` that
loads the benchmark's TorchScript MLP (``parameters.uri`` in model-settings.json) and
answers Open Inference Protocol v2 requests.

MLServer imports it by the ``implementation`` name in model-settings.json, from this
model folder (which it puts on sys.path); it runs in MLServer's own venv.  One torch
thread, as mlform's `local` endpoint runs by default; decoding and encoding through
MLServer's own NumPy codec, as its custom-runtime documentation does it.
"""

from __future__ import annotations

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class TorchScriptRuntime(MLModel):
    """Input 0 as an [n, 16] FP32 tensor, output ``output`` as [n, 2] FP32."""

    async def load(self) -> bool:
        torch.set_num_threads(1)
        self._module = torch.jit.load(await get_model_uri(self._settings))
        self._module.eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = torch.from_numpy(NumpyCodec.decode_input(payload.inputs[0]))
        with torch.inference_mode():
            y = self._module(x).numpy()
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 id=payload.id,
                                 outputs=[NumpyCodec.encode_output("output", y)])
