#!/usr/bin/env bash
# Installs what Skiff needs on a Debian machine: system packages, then the Python package
# with its test extras. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# supervisor runs the local cluster; etcd-client gives etcdctl (tests drive the store
# with it); etcd-server is the real etcd the store benchmark compares against; the
# kubelet runs pods in Docker (docker.io); cgroupfs-mount mounts the cgroup controllers
# dockerd needs where no init system did; nftables gives nft, which the kubelet's bridge
# network plugin writes its masquerade table with.
packages=(supervisor etcd-client etcd-server docker.io cgroupfs-mount nftables)
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

# The local images (skiff/pause, skiff/busybox) are built from Debian's dynamically linked
# busybox and the libraries it loads (skiff/kubelet/images.py). The package conflicts with
# busybox-static, so it is extracted into a cache directory, not installed.
busybox_root=/var/cache/skiff/busybox
if [ ! -x "$busybox_root/bin/busybox" ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  work="$(mktemp -d)"
  if ! (cd "$work" && apt-get download busybox >/dev/null 2>&1); then
    $sudo apt-get update -qq
    (cd "$work" && apt-get download -qq busybox >/dev/null)
  fi
  $sudo mkdir -p "$busybox_root"
  $sudo dpkg-deb -x "$work"/busybox_*.deb "$busybox_root"
  rm -rf "$work"
fi

# The kubelet needs a running Docker engine. Where none answers (a fresh CI machine with
# no init system), start dockerd in the background and wait for it, with a deadline.
if ! docker info >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # cgroup v1 controllers not mounted (and no cgroup v2 hierarchy): mount them.
  if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && ! mountpoint -q /sys/fs/cgroup/memory 2>/dev/null; then
    $sudo cgroupfs-mount || true
  fi
  if ! { command -v systemctl >/dev/null 2>&1 && $sudo systemctl start docker >/dev/null 2>&1; }; then
    $sudo sh -c 'nohup dockerd >/var/log/skiff-dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || {
    echo "install: dockerd did not come up within 60 s (see /var/log/skiff-dockerd.log)" >&2
    exit 1
  }
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
