# The single trustmesh image: CA, injector, sidecar and the redirect init step.
#
#   docker build -t ghcr.io/trustmesh/trustmesh:0.1.0 .
#
# One entrypoint, `trustmesh`; each workload picks its subcommand with args:
#   CA          args: ["ca", "serve", "--config", "/etc/trustmesh/ca/ca.yaml"]
#   injector    args: ["injector", "serve", "--config", "/etc/trustmesh/injector/injector.yaml"]
#   sidecar     args: ["sidecar", "run", "--config", "/etc/trustmesh/sidecar.yaml"]   (uid 1337)
#   init        args: ["redirect", "apply", ...]                                      (uid 0, NET_ADMIN+NET_RAW)
# The image runs as the unprivileged uid 65532 by default; the injected
# containers set their own uid (1337 for the proxy, 0 for the redirect step).

# Pinned base: a full patch version of the Debian 12 slim image (pin the digest
# as well in a release pipeline: python:3.11.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trustmesh ./trustmesh
COPY sdk ./sdk
COPY ca ./ca
COPY sidecar ./sidecar
COPY injector ./injector
COPY policy_dsl ./policy_dsl
RUN python -m venv /opt/trustmesh \
 && /opt/trustmesh/bin/pip install --upgrade pip \
 && /opt/trustmesh/bin/pip install .

FROM ${PYTHON_IMAGE}
# iptables/nftables/iproute2 for `trustmesh redirect apply`; nothing else.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables iproute2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 trustmesh \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin trustmesh \
 && groupadd --gid 1337 trustmesh-proxy \
 && useradd --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin trustmesh-proxy
COPY --from=build /opt/trustmesh /opt/trustmesh
ENV PATH=/opt/trustmesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["trustmesh"]
CMD ["--help"]
