#!/usr/bin/env bash
# FOR OFFLINE MACHINES ONLY: a machine that reaches no image registry (only Debian's packages
# and PyPI) builds stand-ins for the base images docker/Dockerfile and the compose files name.
# A normal machine pulls the real ones (python:3.11-slim-trixie, ghcr.io/astral-sh/uv, redis:7)
# and never runs this; `make images` decides (OFFLINE_BASES=auto|1|0, see docker/images.sh).
#
#   docker/offline-bases.sh            # builds the three tags below, each only when missing
#   FORCE=1 docker/offline-bases.sh    # builds them again
#
# Tags (local only, never pushed):
#   xtyl-offline/python:3.11-bookworm  Debian 12 minbase + python3 (3.11) + python3-venv +
#                                      ca-certificates, from debootstrap: stands in for
#                                      python:3.11-slim-trixie. Its CA bundle is THIS machine's
#                                      (/etc/ssl/certs/ca-certificates.crt), so that pip/uv/apt in
#                                      a build trust an intercepting TLS proxy the way the host
#                                      does; the Dockerfile sets UV_SYSTEM_CERTS=1 to use it.
#   xtyl-offline/uv:<UV_VERSION>       FROM scratch with /uv, taken from uv's PyPI wheel: stands
#                                      in for ghcr.io/astral-sh/uv:<UV_VERSION>.
#   xtyl-offline/redis:7               the python base + Debian's redis-server 7.0, /data owned by
#                                      the redis user: stands in for redis:7 in compose.
# Needs root (debootstrap), debootstrap, a Docker engine and Debian's apt sources on this host.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
UV_VERSION=${UV_VERSION:-$(sed -n 's/^UV_VERSION := //p' Makefile)}
SUITE=${SUITE:-bookworm}
PYTHON_TAG=${OFFLINE_PYTHON_IMAGE:-xtyl-offline/python:3.11-bookworm}
UV_TAG=${OFFLINE_UV_IMAGE:-xtyl-offline/uv:${UV_VERSION}}
REDIS_TAG=${OFFLINE_REDIS_IMAGE:-xtyl-offline/redis:7}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

say() { echo "offline-bases: $*"; }
have() { [ -z "${FORCE:-}" ] && "$DOCKER" image inspect "$1" > /dev/null 2>&1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The Debian mirror this host's apt already uses (first deb URI of the main archive).
debian_mirror() {
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
          /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -oE 'https?://[^ ]*/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ')
  echo "${uri:-http://deb.debian.org/debian}"
}

build_python() {
  if have "$PYTHON_TAG"; then say "$PYTHON_TAG present"; return; fi
  command -v debootstrap > /dev/null || { say "debootstrap missing: apt-get install -y debootstrap" >&2; exit 1; }
  local root="$work/rootfs" mirror started=$SECONDS
  mirror=$(debian_mirror)
  say "debootstrap --variant=minbase $SUITE from $mirror (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  install -m 0644 "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
  # slim it the way the official -slim images are: no apt lists, caches, docs or manuals
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
  ln -sf python3 "$root/usr/bin/python"
  tar -C "$root" -c . | "$DOCKER" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$PYTHON_TAG" > /dev/null
  say "$PYTHON_TAG built in $((SECONDS - started)) s"
}

build_uv() {
  if have "$UV_TAG"; then say "$UV_TAG present"; return; fi
  local python=${PYTHON:-python3}
  say "uv $UV_VERSION from its PyPI wheel"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$work/uv" "uv==$UV_VERSION"
  (cd "$work/uv" && "$python" -m zipfile -e uv-*.whl wheel)
  install -m 0755 "$work"/uv/wheel/uv-*.data/scripts/uv "$work/uv/uv"
  printf 'FROM scratch\nCOPY uv /uv\n' > "$work/uv/Dockerfile"
  DOCKER_BUILDKIT=1 "$DOCKER" build --quiet -t "$UV_TAG" "$work/uv" > /dev/null
  say "$UV_TAG built"
}

build_redis() {
  if have "$REDIS_TAG"; then say "$REDIS_TAG present"; return; fi
  say "redis-server from Debian's packages on $PYTHON_TAG"
  mkdir -p "$work/redis"
  cat > "$work/redis/Dockerfile" <<EOF
FROM $PYTHON_TAG
RUN apt-get update -q && apt-get install -y -q --no-install-recommends redis-server \\
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \\
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
EOF
  DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --network host -t "$REDIS_TAG" "$work/redis" > /dev/null
  say "$REDIS_TAG built"
}

build_python
build_uv
build_redis
