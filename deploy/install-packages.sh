#!/usr/bin/env bash
# The Debian packages `make test-deploy` needs: podman and runc to build and run the images, mmdebstrap
# to make their base without a registry, nginx for the edge gateway, Chromium and its WebDriver for the console's
# browser tests (no browser can be downloaded at test time; a font so their screenshots have readable text).
# Everything else comes from PyPI.
set -euo pipefail
packages=(podman runc mmdebstrap uidmap fuse-overlayfs nginx-light chromium chromium-driver fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
