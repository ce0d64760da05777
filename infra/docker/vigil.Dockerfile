# syntax=docker/dockerfile:1
# Vigil's code image: the Dagster code location (gRPC server, the default command), the run and
# step pods the K8s run launcher starts, and in compose also dagster-webserver and dagster-daemon
# (as Dagster's deploy_docker example does). Dependencies come from uv.lock only. No secret is
# baked in: connection strings arrive as environment variables at run time.
#
#   docker build -f infra/docker/vigil.Dockerfile -t vigil:dev .      (from the repository root)
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv
# the uv version the Makefile pins
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# the locked dependencies first: this layer is rebuilt only when the lock changes
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra production --extra k8s --no-install-project
COPY vigil ./vigil
COPY assets ./assets
COPY resources ./resources
COPY pipelines ./pipelines
COPY serving ./serving
COPY infra/feast ./infra/feast
COPY infra/dagster ./infra/dagster
COPY workspace.yaml bentofile.yaml ./
# editable install (uv's default): vigil.feature_repo finds infra/feast beside the source tree
RUN uv sync --frozen --no-dev --extra production --extra k8s

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid vigil --no-create-home --shell /usr/sbin/nologin vigil \
 && mkdir -p /var/lib/vigil /opt/dagster/home/storage \
 && chown -R vigil:vigil /var/lib/vigil /opt/dagster/home
COPY --from=build /app /app
# production Dagster instance (PostgreSQL from VIGIL_PG_*); under Helm the chart mounts its own
COPY --from=build /app/infra/dagster/dagster.yaml /opt/dagster/home/dagster.yaml
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIGIL_PROFILE=production \
    VIGIL_HOME=/var/lib/vigil \
    BENTOML_HOME=/var/lib/vigil/bentoml \
    DAGSTER_HOME=/opt/dagster/home
WORKDIR /app
USER 10001:10001
EXPOSE 4000
# fits the default command only; compose gives webserver and daemon their own checks
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["dagster", "api", "grpc-health-check", "--port", "4000"]
CMD ["dagster", "api", "grpc", "--module-name", "pipelines.definitions", "--working-directory", "/app", \
     "--host", "0.0.0.0", "--port", "4000"]
