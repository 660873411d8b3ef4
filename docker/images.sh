#!/usr/bin/env bash
# `make images`: every deployable's image from docker/Dockerfile, built from the repository root,
# then each image's size. Tags: ${XTYL_IMAGE_PREFIX}xtyl-<svc>:${XTYL_IMAGE_TAG:-latest}, the
# names compose/docker-compose.prod.yml runs.
#
# Base images (python, uv; redis for compose): OFFLINE_BASES=
#   auto (default)  use PYTHON_IMAGE/UV_IMAGE when they are here or can be pulled; when the
#                   registry does not answer (a pull fails), build the offline stand-ins
#   1               always use the offline stand-ins (docker/offline-bases.sh)
#   0               never: a pull failure is an error
# SERVICES="gateway rag" builds only those. BUILD_NETWORK (default host) is the network of the
# builds' RUN steps.
set -euo pipefail
cd "$(dirname "$0")/.."
source docker/engine.sh

UV_VERSION=$(sed -n 's/^UV_VERSION := //p' Makefile)
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-trixie}
UV_IMAGE=${UV_IMAGE:-ghcr.io/astral-sh/uv:${UV_VERSION}}
OFFLINE_BASES=${OFFLINE_BASES:-auto}
SERVICES=${SERVICES:-gateway storage rag notify migrate}
PREFIX=${XTYL_IMAGE_PREFIX:-}
TAG=${XTYL_IMAGE_TAG:-latest}
BUILD_NETWORK=${BUILD_NETWORK:-host}

present_or_pulled() {  # an image is here, or a pull brings it (fails fast with no registry)
  "$DOCKER" image inspect "$1" > /dev/null 2>&1 && return 0
  echo "images: pulling $1"
  timeout 300 "$DOCKER" pull --quiet "$1" > /dev/null 2>&1
}

use_offline() {
  docker/offline-bases.sh
  PYTHON_IMAGE=${OFFLINE_PYTHON_IMAGE:-xtyl-offline/python:3.11-bookworm}
  UV_IMAGE=${OFFLINE_UV_IMAGE:-xtyl-offline/uv:${UV_VERSION}}
}

case "$OFFLINE_BASES" in
  1) use_offline ;;
  0) present_or_pulled "$PYTHON_IMAGE" && present_or_pulled "$UV_IMAGE" \
       || { echo "images: cannot pull $PYTHON_IMAGE or $UV_IMAGE (OFFLINE_BASES=0)" >&2; exit 1; } ;;
  auto)
    if present_or_pulled "$PYTHON_IMAGE" && present_or_pulled "$UV_IMAGE"; then :; else
      echo "images: no registry answers: building offline stand-ins for the base images"
      use_offline
    fi ;;
  *) echo "images: OFFLINE_BASES must be auto, 1 or 0 (got '$OFFLINE_BASES')" >&2; exit 2 ;;
esac
echo "images: bases $PYTHON_IMAGE, $UV_IMAGE"

started=$SECONDS
for service in $SERVICES; do
  image="${PREFIX}xtyl-${service}:${TAG}"
  t0=$SECONDS
  echo "images: building $image"
  DOCKER_BUILDKIT=1 "$DOCKER" build --network "$BUILD_NETWORK" --progress plain \
    -f docker/Dockerfile \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "UV_IMAGE=$UV_IMAGE" \
    --build-arg "SERVICE=$service" -t "$image" . > "${IMAGES_LOG:-/tmp}/xtyl-image-$service.log" 2>&1 \
    || { tail -n 40 "${IMAGES_LOG:-/tmp}/xtyl-image-$service.log" >&2; echo "images: $image failed" >&2; exit 1; }
  echo "images: $image built in $((SECONDS - t0)) s"
done

echo "images: built in $((SECONDS - started)) s"
printf '%-40s %s\n' IMAGE SIZE
for service in $SERVICES; do
  image="${PREFIX}xtyl-${service}:${TAG}"
  bytes=$("$DOCKER" image inspect --format '{{.Size}}' "$image")
  printf '%-40s %d MB\n' "$image" $((bytes / 1000 / 1000))
done
