# One image for the worker, the producer and Flower. TORCH_SPEC picks the torch build (CUDA by default).
FROM python:3.11-slim
ARG TORCH_SPEC="torch>=2.2"
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HOME=/cache/huggingface
WORKDIR /app
RUN pip install "${TORCH_SPEC}"
COPY pyproject.toml README.md celeryconfig.py ./
COPY eduranker ./eduranker
COPY producer ./producer
COPY worker ./worker
COPY console ./console
RUN pip install ".[trainer]" && useradd --create-home --uid 1000 eduranker && mkdir -p /models /cache /data && chown eduranker /models /cache /data
USER eduranker
