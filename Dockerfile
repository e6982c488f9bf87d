# The image the kubernetes provider's pods run: mlform (the pod runner,
# `python -m mlform.providers.kubernetes.pod train|serve`) with torch, FastAPI,
# uvicorn[standard] (uvloop, httptools) and orjson for the model server.  docs/kubernetes-provider.md says how to build and push it.
FROM python:3.11-slim
WORKDIR /opt/mlform
COPY pyproject.toml README.md ./
COPY engine engine
COPY providers providers
COPY specs specs
# torch's CPU wheels keep the image small; use a CUDA base and PyPI's torch for GPU nodes
RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir ".[local,kubernetes]"
RUN mkdir -p /work && chown 1000 /work
WORKDIR /work
USER 1000
EXPOSE 8080
CMD ["python", "-m", "mlform.providers.kubernetes.pod", "serve"]
