#!/usr/bin/env bash
# Installs what Skiff needs on a Debian machine: system packages, then the Python package
# with its test extras. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# supervisor runs the local cluster; etcd-client gives etcdctl (tests drive the store
# with it); etcd-server is the real etcd the store benchmark compares against.
packages=(supervisor etcd-client etcd-server)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a packaged etcd on 2379 when it can; the store owns that port.
  $sudo systemctl disable --now etcd >/dev/null 2>&1 || true
  pkill -x etcd >/dev/null 2>&1 || true
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
