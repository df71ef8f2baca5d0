# DeepFake Forensics — the same install as the README, CPU by default.
#   docker build -t dff .
#   docker build -t dff-cuda --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
# Mount a checkpoint directory at /data/models (or set DFF_CHECKPOINT).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# CPU wheels by default keep the image small; a CUDA index gives GPU wheels.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DFF_DATA_DIR=/data \
    DFF_HOST=0.0.0.0

# The CUDA base images carry no Python; the python:* images do (then this is a no-op).
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && \
      rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY stream ./stream
COPY ui ./ui
COPY bench ./bench
COPY examples ./examples

RUN python3 -m venv /venv && \
    /venv/bin/pip install --extra-index-url "${TORCH_INDEX}" torch torchvision && \
    /venv/bin/pip install -e .

ENV PATH=/venv/bin:$PATH
VOLUME /data
EXPOSE 7860
CMD ["dff", "serve"]
