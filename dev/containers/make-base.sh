#!/usr/bin/env bash
# Make a local Debian bookworm base image for deploy/Dockerfile on a machine that cannot pull
# python:3.11-slim: debootstrap from the Debian mirror apt already uses, then `podman import`.
# Idempotent: does nothing when the image exists. Usage: dev/containers/make-base.sh [IMAGE]
set -euo pipefail

IMAGE="${1:-localhost/recipes-base:bookworm}"
# crun refuses this machine's hybrid cgroups; runc with cgroupfs works (see tests/containers).
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)

if "${PODMAN[@]}" image exists "$IMAGE"; then
  echo "base image $IMAGE: exists"
  exit 0
fi

# The mirror apt is configured with (deb822 or one-line sources), so no other host is reached.
MIRROR="${DEBIAN_MIRROR:-$(
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
  } | grep -v security | grep -m1 debian || true
)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

ROOTFS="$(mktemp -d /var/tmp/recipes-base.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"
# Nothing of the build machine's apt state or caches belongs in an image.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/tmp/* \
  "$ROOTFS"/var/log/bootstrap.log
tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import --quiet \
  --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
echo "base image $IMAGE: made"
