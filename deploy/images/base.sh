#!/usr/bin/env bash
# Builds a python 3.11 base image from Debian bookworm packages, for hosts that cannot pull the public
# python image (the Dockerfile's default base). Only the packages a service needs at run time: python3
# and what the public slim image also carries (CA certificates, netbase, tzdata). Prints the image
# reference pinned by digest.
#
#   deploy/images/base.sh [image-name]       (default localhost/handshake-python-base:3.11-bookworm)
#
# Needs mmdebstrap and podman, run as root. MIRROR / SECURITY_MIRROR override the Debian mirrors.
set -euo pipefail

name=${1:-localhost/handshake-python-base:3.11-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
security_mirror=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$root/.data/images/base
mkdir -p "$work"
tarball=$work/rootfs.tar

# python-is-python3: the entrypoint is `python -m ...`, as in the public image
# merged /usr set up by mmdebstrap's hook: the usrmerge package would pull perl (~50 MB) into the image
mmdebstrap --quiet --mode=root --variant=minbase --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=python3,python-is-python3,ca-certificates,netbase,tzdata \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm "$tarball" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security_mirror bookworm-security main" >&2

podman import --quiet \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$tarball" "$name" >/dev/null
rm -f "$tarball"
digest=$(podman image inspect --format '{{.Digest}}' "$name")
repository=$name
[[ ${name##*/} == *:* ]] && repository=${name%:*}
echo "$repository@$digest"
