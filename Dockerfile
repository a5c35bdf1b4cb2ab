# segloop service image: the API (`segloop serve`) and the workers (`segloop worker`).
# CPU by default; for GPU workers build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SEGLOOP_HOME=/data

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 segloop \
    && mkdir -p /data && chown segloop:segloop /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# torch only matters for the SAM2-family engines in workers; the API never imports it
RUN pip install --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple \
        "torch==2.13.0" \
    && pip install ".[service]" flower

USER segloop
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)" || exit 1

# the API; docker-compose.yml overrides the command for workers and flower
CMD ["segloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
