#!/usr/bin/env bash
# Builds the four service images and the operations console's: wheels on the host (pinned by constraints.txt), then each image from
# a build context holding only those wheels (see the Dockerfile).
#
#   deploy/images/build.sh [service ...]          (default: order payment inventory webhook-ingest console)
#
# Environment:
#   IMAGE_PREFIX   image names are $IMAGE_PREFIX<service>:$IMAGE_TAG (default localhost/handshake-)
#   IMAGE_TAG      default dev
#   BASE_IMAGE     the python base, pinned by digest; default: the Dockerfile's (public python slim
#                  image). BASE_IMAGE=local builds one from Debian packages with base.sh (podman,
#                  mmdebstrap) for hosts without registry access, and reuses it once built.
#   CONTAINER_ENGINE  podman or docker (default: podman if installed, else docker)
#   PYTHON         the interpreter that builds the wheels (default: the project's .venv)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/deploy/images
services=("$@")
[[ ${#services[@]} -gt 0 ]] || services=(order payment inventory webhook-ingest console)
prefix=${IMAGE_PREFIX:-localhost/handshake-}
tag=${IMAGE_TAG:-dev}
python=${PYTHON:-$root/.venv/bin/python}
# pip only runs inside the build stage, from its wheel; it is not installed in any image
pip_version=26.3
started=$SECONDS

engine=${CONTAINER_ENGINE:-}
if [[ -z $engine ]]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null; then engine=docker
  else echo "build.sh: neither podman nor docker is installed" >&2; exit 1
  fi
fi
engine_args=()
if [[ $engine == podman ]]; then
  # Rootful podman raises the nofile/nproc limits of build containers to its own defaults, which a host
  # with lower hard limits refuses (EPERM from the runtime); ask for what the host allows.
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited ]] && nofile=1048576
  engine_args+=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=4096:4096")
fi

base_args=()
if [[ ${BASE_IMAGE:-} == local ]]; then
  base_name=localhost/handshake-python-base:3.11-bookworm
  if ! base=$(podman image inspect --format '{{.Digest}}' "$base_name" 2>/dev/null); then
    echo "build.sh: building the base image $base_name from Debian packages" >&2
    "$here/base.sh" "$base_name" >/dev/null
    base=$(podman image inspect --format '{{.Digest}}' "$base_name")
  fi
  base_args=(--build-arg "BASE_IMAGE=${base_name%:*}@$base")
elif [[ -n ${BASE_IMAGE:-} ]]; then
  base_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

# The context: a fresh copy of the packages' sources (no build/ or egg-info left over from editable
# installs can leak stale modules into a wheel), built into wheels with every dependency pinned.
context=$root/.data/images/context
sources=$root/.data/images/sources
rm -rf "$context" "$sources"
mkdir -p "$context/wheels" "$context/pip" "$sources"
packages=(shared)
for service in "${services[@]}"; do packages+=("services/$service"); done
for package in "${packages[@]}"; do
  mkdir -p "$sources/$package"
  tar -C "$root/$package" --exclude=build --exclude='*.egg-info' --exclude=__pycache__ --exclude=tests \
    -cf - . | tar -C "$sources/$package" -xf -
done
# one fixed timestamp in every wheel: the same sources give byte-identical wheels, so an unchanged
# tree reuses the cached image layers (commits elsewhere in the repository do not invalidate them)
SOURCE_DATE_EPOCH=315532800 \
  "$python" -m pip wheel --quiet --disable-pip-version-check \
    --constraint "$root/constraints.txt" --wheel-dir "$context/wheels" \
    "${packages[@]/#/$sources/}"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --dest "$context/pip" "pip==$pip_version"
mv "$context"/pip/pip-*.whl "$context/pip/pip.whl"
cp "$root/constraints.txt" "$here/install-venv" "$context/"
# podman's layer cache also compares file times: a rebuilt but identical context must look identical
find "$context" -exec touch --no-dereference --date=@315532800 {} +
wheels_done=$SECONDS

revision=$(git -C "$root" rev-parse HEAD)
for service in "${services[@]}"; do
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/services/$service/pyproject.toml")
  "$engine" build "${engine_args[@]}" "${base_args[@]}" \
    --network none \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    --target "$service" --tag "$prefix$service:$tag" \
    --file "$here/Dockerfile" "$context" >&2
done

echo "build.sh: wheels $((wheels_done - started)) s, images $((SECONDS - wheels_done)) s," \
  "total $((SECONDS - started)) s" >&2
for service in "${services[@]}"; do echo "$prefix$service:$tag"; done
