# syntax=docker/dockerfile:1
# The scoring endpoint without `bentoml containerize` (CI deploys the containerized Bento; this
# image serves the same code from the same lock). Models are not in the image: the service loads
# the promoted model from $VIGIL_HOME (a volume) and follows promotions without a restart.
#
#   docker build -f infra/docker/serving.Dockerfile -t vigil-serving:dev .   (from the repository root)
#   docker run -p 127.0.0.1:3001:3000 -v vigil-home:/var/lib/vigil --env-file serving.env vigil-serving:dev
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra production --extra batch --no-install-project
# what bentofile.yaml puts in the Bento: the service, the core package, the Feast configs
COPY vigil ./vigil
COPY serving ./serving
COPY infra/feast ./infra/feast
COPY bentofile.yaml ./
RUN uv sync --frozen --no-dev --extra production --extra batch

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid vigil --no-create-home --shell /usr/sbin/nologin vigil \
 && mkdir -p /var/lib/vigil \
 && chown vigil:vigil /var/lib/vigil
COPY --from=build /app /app
# BENTOML_HOME holds BentoML's Prometheus files per process: keep it off the shared volume
# (every replica clears it at start); the model store is read from $VIGIL_HOME/bentoml/models.
# Everything written outside $VIGIL_HOME goes to /tmp, so the root filesystem can be read-only.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIGIL_PROFILE=production \
    VIGIL_HOME=/var/lib/vigil \
    BENTOML_HOME=/tmp/bentoml \
    BENTOML_DO_NOT_TRACK=True \
    HOME=/tmp
WORKDIR /app
USER 10001:10001
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/livez', timeout=2)"]
# Vigil listens on loopback unless told otherwise: in a container the host must be given. The
# arguments are the CMD so `docker run IMAGE --port 3100` and the Kubernetes `args` replace them,
# as they do for the containerized Bento's entrypoint.
ENTRYPOINT ["python", "-m", "bentoml", "serve", "serving.service:FraudScorer", "--working-dir", "/app"]
CMD ["--host", "0.0.0.0", "--port", "3000"]
