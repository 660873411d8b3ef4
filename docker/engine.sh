# Sourced by the scripts of docker/ and compose/: sets DOCKER to a docker client that can build
# with BuildKit against the running engine. A client of Docker 23+ builds only through its buildx
# plugin; one without it (a bare static client on PATH) cannot, while Debian's 20.10 client
# (`apt-get install docker.io`, /usr/bin/docker) builds with DOCKER_BUILDKIT=1 by itself.
# DOCKER=/path/to/docker overrides the choice.

_buildkit_client() {
  local major
  "$1" buildx version > /dev/null 2>&1 && return 0
  major=$("$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
  [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null
}

if [ -z "${DOCKER:-}" ]; then
  for candidate in $(type -ap docker); do
    if _buildkit_client "$candidate"; then DOCKER=$candidate; break; fi
  done
fi
if [ -z "${DOCKER:-}" ]; then
  echo "no docker client that builds with BuildKit (a Docker 23+ client needs buildx;" \
       "Debian: apt-get install docker.io)" >&2
  return 1 2> /dev/null || exit 1
fi
if ! "$DOCKER" info > /dev/null 2>&1; then
  echo "no Docker engine answers $DOCKER (start one: dockerd &)" >&2
  return 1 2> /dev/null || exit 1
fi
export DOCKER
