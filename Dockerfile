# trustmesh's two images, from one Dockerfile (scripts/image builds both):
#
#   --target sidecar        ghcr.io/trustmesh/trustmesh-sidecar:VERSION
#       the injected containers: `trustmesh sidecar run` (uid 1337) and the
#       init container's `trustmesh redirect apply` (uid 0, NET_ADMIN+NET_RAW).
#       No Kubernetes client; iptables, nftables and iproute2 for the redirect.
#       Pulled onto every node for every pod, so it is kept small.
#   --target control-plane  ghcr.io/trustmesh/trustmesh-control-plane:VERSION
#       `trustmesh ca serve` and `trustmesh injector serve`, with the
#       Kubernetes client (the `kubernetes` extra); no iptables.
#
#   docker build --target sidecar -t ghcr.io/trustmesh/trustmesh-sidecar:0.1.0 .
#
# One entrypoint, `trustmesh`; each workload picks its subcommand with args.
# Only what runs is shipped: no pip, setuptools, wheel or ensurepip, no
# compilers or mypy (the sidecar's modules compiled with mypyc are built in a
# stage of their own and only they are copied), no apt, dpkg or perl, no
# package lists, no docs; each image is one flattened layer (FROM scratch +
# COPY of the trimmed tree), so what a stage deletes is gone.
# The sidecar image runs as the proxy uid/gid 1337 by default, the control
# plane as the unprivileged 65532; the init container sets uid 0 itself.

# Pinned base: a full patch version of the Debian 12 slim image (pin the digest
# as well in a release pipeline: python:3.11.11-slim-bookworm@sha256:...).
# Any Debian 12 image with python3 (and its venv module) on PATH as `python`
# works; scripts/image builds one with mmdebstrap where no registry is reachable.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# -- build: one virtualenv per image ----------------------------------------------
# The dependencies go in before the sources are copied, each image's in a stage
# of its own: a change to the sources rebuilds only the small layers that
# install trustmesh itself, and building one image never installs the other's
# dependencies (the sidecar's venv has no Kubernetes client to fetch or strip).
# scripts/podman/venv says what each step does.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_CACHE_DIR=1
# strip(1) for the extension modules; gcc and Python's headers for mypyc (the
# sidecar's compiled modules: the official image has the headers, Debian's
# python3 needs libpython3-dev). dpkg's unsafe-io: no fsync per unpacked
# file (seconds on a slow disk), in a stage that is thrown away anyway.
RUN set -eu; \
    headers=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])'); \
    dev=""; [ -f "$headers/Python.h" ] || dev=libpython3-dev; \
    apt-get update; \
    apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-unsafe-io binutils gcc libc6-dev $dev
COPY scripts/podman/venv /usr/local/bin/trustmesh-venv
WORKDIR /src
COPY pyproject.toml ./

FROM build AS sidecar-deps
RUN trustmesh-venv deps sidecar

FROM build AS control-plane-deps
RUN trustmesh-venv deps control-plane

FROM build AS source
COPY README.md ./
COPY trustmesh ./trustmesh
COPY sdk ./sdk
COPY ca ./ca
COPY sidecar ./sidecar
COPY injector ./injector
COPY policy_dsl ./policy_dsl

FROM sidecar-deps AS sidecar-venv
COPY --from=source /src /src
RUN trustmesh-venv finish

# The sidecar's hot modules compiled with mypyc, as scripts/setup does for a
# checkout: scripts/build_codec, run by the sidecar venv's own Python (same
# interpreter, same prefix /opt/trustmesh), puts them in
# /opt/trustmesh/trustmesh-codec/<digest of the sources>/; only that directory
# goes into the image, never mypy or gcc. The sidecar uses it only while the
# installed sources have that digest (sidecar/_compiled.py); the sidecar-tree
# stage fails the build if it would not. Only the packages mypy follows from the
# compiled modules come in, so a change elsewhere (ca, injector) compiles nothing.
FROM sidecar-deps AS sidecar-compiled
RUN trustmesh-venv compile-deps
COPY --from=source /src/sidecar /src/sidecar
COPY --from=source /src/sdk /src/sdk
COPY --from=source /src/policy_dsl /src/policy_dsl
COPY scripts/build_codec /src/scripts/build_codec
RUN trustmesh-venv compile

FROM control-plane-deps AS control-plane-venv
COPY --from=source /src /src
RUN trustmesh-venv finish

# -- runtime: the base trimmed to what runs ----------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# Delete the Python packaging tools, the stdlib parts no server uses, caches and docs,
# and glibc's iconv modules (gconv, 8 MB: Python brings its own codecs).
RUN set -eu; \
    py=$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])'); \
    site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    rm -rf "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* "$site"/wheel "$site"/wheel-* \
           "$site"/_distutils_hack "$site"/distutils-precedence.pth /usr/local/bin/pip* \
           /usr/share/python-wheels "$py"/ensurepip "$py"/idlelib "$py"/tkinter "$py"/turtledemo \
           "$py"/lib2to3 "$py"/pydoc_data "$py"/test "$py"/distutils/tests "$py"/config-3*; \
    rm -rf /usr/lib/x86_64-linux-gnu/gconv /usr/lib/aarch64-linux-gnu/gconv; \
    groupadd --gid 1337 trustmesh-proxy; \
    useradd --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin trustmesh-proxy; \
    groupadd --gid 65532 trustmesh; \
    useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin trustmesh

FROM runtime AS sidecar-tree
# iptables/nftables/iproute2 for `trustmesh redirect apply`; nothing else.
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-unsafe-io iptables nftables iproute2; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/* /var/log/* /usr/share/doc/*/changelog* /usr/share/man/* /usr/share/info/*
COPY --from=sidecar-venv /opt/trustmesh /opt/trustmesh
COPY --from=sidecar-compiled /opt/trustmesh/trustmesh-codec /opt/trustmesh/trustmesh-codec
# No package tooling, nor the libraries only it used (scripts/podman/trim-os says what goes).
COPY scripts/podman/trim-os /tmp/trim-os
RUN sh /tmp/trim-os && rm /tmp/trim-os
# The installed sidecar picks the compiled modules (their digest is the installed sources'),
# as uid 1337 from / (not next to any source tree), without writing anything.
RUN cd / && PYTHONDONTWRITEBYTECODE=1 /opt/trustmesh/bin/python -c 'import os; \
os.setgroups([]); os.setgid(1337); os.setuid(1337); import sidecar, sidecar.hpack; \
assert sidecar.CODEC_COMPILED and sidecar.hpack.__file__.endswith(".so"), sidecar.hpack.__file__'

FROM runtime AS control-plane-tree
RUN rm -rf /var/lib/apt/lists/* /var/cache/* /var/log/* /usr/share/man/* /usr/share/info/*
COPY --from=control-plane-venv /opt/trustmesh /opt/trustmesh
COPY scripts/podman/trim-os /tmp/trim-os
RUN sh /tmp/trim-os && rm /tmp/trim-os

# -- the images: one flattened layer each ----------------------------------------
FROM scratch AS control-plane
COPY --from=control-plane-tree / /
ENV PATH=/opt/trustmesh/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["trustmesh"]
CMD ["--help"]

FROM scratch AS sidecar
COPY --from=sidecar-tree / /
ENV PATH=/opt/trustmesh/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 1337:1337
ENTRYPOINT ["trustmesh"]
CMD ["--help"]
