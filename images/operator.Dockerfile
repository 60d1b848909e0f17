# vram-operator controller image: `vram-operator run` (kopf).
#
# Two stages: the first builds a wheel of the package and installs it with its dependencies
# into a virtualenv; the second copies only that virtualenv onto a fresh slim base, so no
# compiler, pip cache or source tree ships. The entrypoint is the console script itself
# (exec form), so the image needs no shell at run time.
#
# Build from the repository root:  docker build -f images/operator.Dockerfile -t vram-operator:dev .

# Pinned to an exact patch release and Debian release (never a floating tag); a release pipeline
# should add the digest it verified (python:3.11.10-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl \
    # compile once at build time: the root filesystem is read-only at run time
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vram-operator" \
      org.opencontainers.image.description="Kubernetes operator that sizes, places and measures GPU inference servers by VRAM" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/vram-operator/vram-operator"
COPY --from=build /opt/venv /opt/venv
# No .pyc writes, unbuffered logs, and a writable HOME under /tmp (the only writable mount).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# 65532: the conventional "nonroot" uid; numeric so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/opt/venv/bin/vram-operator", "run"]
