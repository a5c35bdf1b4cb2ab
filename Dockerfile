# segloop service image: the API (`segloop serve`) and the workers (`segloop worker`).
# CPU by default; for GPU workers build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126
# the viewer's front-end packages (NiiVue) come from npm, never from the repository
FROM node:20-slim AS web
WORKDIR /web
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --omit=dev

FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SEGLOOP_HOME=/data \
    SEGLOOP_NODE_MODULES=/app/node_modules

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 segloop \
    && mkdir -p /data && chown segloop:segloop /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY --from=web /web/node_modules ./node_modules
# torch only matters for the SAM2-family engines in workers; the API never imports it
RUN pip install --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple \
        "torch==2.13.0" \
    && pip install ".[service,sam2,ism]"

USER segloop
VOLUME ["/data"]
EXPOSE 8000 8002

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)" || exit 1

# the API; docker-compose.yml overrides the command for workers and flower
CMD ["segloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
