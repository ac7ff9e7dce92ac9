# syntax=docker/dockerfile:1
# The topx container: `python -m batch` (the topx command line) as an unprivileged user; the
# default command is `run`, the whole job. Two images:
#   docker build --target sagemaker -t topx:sagemaker .   light: the SageMaker backend, no PyTorch/faiss
#   docker build --target local -t topx:local .           the local engines: CPU PyTorch + faiss
# Every dependency is pinned by constraints.txt. tests/test_dockerfile.py runs each target's RUN
# steps in a fresh virtualenv (no Docker engine needed) and starts the entrypoint.

ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/topx
ENV PATH="/opt/topx/bin:${PATH}"

# Build stages: sources and a virtualenv; only the virtualenv reaches the images.
FROM base AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY batch ./batch
RUN python -m venv "$VIRTUAL_ENV"

FROM build AS build-sagemaker
RUN pip install -c constraints.txt ".[parquet,report]"

FROM build AS build-local
# PyPI's torch wheel for Linux carries CUDA (gigabytes); PyTorch's CPU index has the same
# version as 2.13.0+cpu, which the == pin in constraints.txt accepts and pip prefers.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install -c constraints.txt --extra-index-url "$TORCH_INDEX_URL" ".[local,parquet,report]"

FROM base AS runtime
RUN groupadd --system --gid 10001 topx \
    && useradd --system --uid 10001 --gid topx --create-home --home-dir /home/topx topx
# The work directory (stage outputs, the embedded SQLite file) is relative to here.
WORKDIR /home/topx
ENTRYPOINT ["python", "-m", "batch"]
CMD ["run"]

FROM runtime AS local
COPY --from=build-local /opt/topx /opt/topx
USER 10001:10001

# Last, so a plain `docker build .` gives the light image. It can only train and search on
# SageMaker, so that is its default backend.
FROM runtime AS sagemaker
ENV TOPX_TRAIN_BACKEND=sagemaker \
    TOPX_SEARCH_BACKEND=sagemaker
COPY --from=build-sagemaker /opt/topx /opt/topx
USER 10001:10001
