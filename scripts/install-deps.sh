#!/usr/bin/env bash
# Installs everything Meridian needs to build, run, test and benchmark, from
# Debian's packages. Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config
      libevent-dev libmbedtls-dev liblmdb-dev libjansson-dev libyaml-dev duktape-dev
      node-llhttp libcriterion-dev
      python3 python3-pytest curl nginx-light haproxy wrk strace)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The nginx package starts a system-wide server on port 80; tests start their
# own nginx on free ports and do not need it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx || true
fi
