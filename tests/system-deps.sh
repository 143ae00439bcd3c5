#!/usr/bin/env bash
# Installs the Debian packages the test suite runs as real servers (and htpasswd, which writes
# the login files the tests use), when they are missing.
# Usage: tests/system-deps.sh [extra packages...]
set -euo pipefail
need=()
for spec in docker-registry:docker-registry redis-server:redis-server redis-tools:redis-cli \
    skopeo:skopeo \
    apache2-utils:htpasswd "$@"; do
  pkg=${spec%%:*} bin=${spec#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/bin/$bin" ] || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
((${#need[@]})) || exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the packages' own services from starting: the tests start their own on free ports.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
