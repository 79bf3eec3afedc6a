# syntax=docker/dockerfile:1
# bess-farm image: `bess run` as the entry point, non-root, read-only-root friendly, with the
# numba kernels compiled at build time. Build: docker build -t bess-farm:0.1.0 .
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (helm/bess-farm).

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# ---- build: the package and its dependencies in a virtual environment (wheels only, no compiler)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
# extras: fast (uvloop); add parquet for `bess simulate --format parquet` (pyarrow, ~100 MB)
ARG BESS_EXTRAS=fast
RUN python -m venv /opt/bess/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bess_farm/ bess_farm/
COPY engine/ engine/
COPY interfaces/ interfaces/
COPY otel/ otel/
RUN /opt/bess/venv/bin/pip install --only-binary=:all: --no-binary=bess-farm ".[${BESS_EXTRAS}]" \
    && /opt/bess/venv/bin/pip check

# ---- runtime
FROM ${PYTHON_IMAGE} AS runtime
# Kernels are compiled for a portable CPU, not the build machine's, so that the cache baked in
# below is used on every node (numba keys its cache on the CPU name and features). x86-64-v3 is
# AVX2/FMA (Haswell and later); use generic for older x86 nodes, or build arm64 with generic.
ARG NUMBA_CPU_NAME=x86-64-v3
ENV PATH=/opt/bess/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CPU_NAME=${NUMBA_CPU_NAME} \
    NUMBA_CPU_FEATURES="" \
    NUMBA_CACHE_DIR=/opt/bess/numba-cache \
    BESS_STATE_DIR=/var/lib/bess \
    HOME=/var/lib/bess
RUN groupadd --system --gid 10001 bess \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/bess --no-create-home \
       --shell /usr/sbin/nologin bess \
    && mkdir -p /opt/bess/numba-cache /var/lib/bess /var/cache/bess \
    && chown 10001:10001 /opt/bess/numba-cache /var/lib/bess /var/cache/bess
COPY --from=build /opt/bess/venv /opt/bess/venv
COPY tools/warm_numba_cache.py /opt/bess/tools/warm_numba_cache.py
USER 10001:10001
# Compile every kernel `bess run` and `bess simulate` use into /opt/bess/numba-cache. numba needs
# a writable cache directory even to load from it: with a read-only root filesystem, point
# NUMBA_CACHE_DIR at a writable volume and copy this directory into it first (the chart's init
# container does: cp -R /opt/bess/numba-cache/. "$NUMBA_CACHE_DIR"/).
RUN python /opt/bess/tools/warm_numba_cache.py
WORKDIR /var/lib/bess
EXPOSE 5020 8000 9090
ENTRYPOINT ["bess"]
CMD ["run"]
