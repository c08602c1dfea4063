#!/usr/bin/env bash
# `make base-image`: the Debian bookworm base built here from Debian packages, for hosts that cannot pull
# the pinned public image (no registry reachable). Same distribution and Python (Debian's 3.11.2) as
# debian:bookworm-*-slim; package versions are bookworm's as of the day it is built (docs/containers.md).
#
#   bash scripts/base_image.sh [NAME]          # default supportlm-base:bookworm
#   DEBIAN_MIRROR=http://<mirror>/debian bash scripts/base_image.sh
set -euo pipefail
NAME=${1:-supportlm-base:bookworm}
command -v docker >/dev/null || { echo "base-image: docker not found (install Docker, e.g. apt-get install docker.io)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "base-image: debootstrap not found (apt-get install debootstrap)" >&2; exit 2; }
if docker image inspect "$NAME" >/dev/null 2>&1; then echo "base-image: $NAME exists"; exit 0; fi
# the mirror this host's apt already uses (deb822 .sources or one-line .list), unless given
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-$(sed -n 's/^deb \(\[[^]]*\] \)\?\([^ ]*debian\) bookworm .*/\2/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)}
[ -n "$MIRROR" ] || { echo "base-image: no Debian mirror in /etc/apt; set DEBIAN_MIRROR=http://<mirror>/debian" >&2; exit 2; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
t0=$(date +%s)
echo "base-image: debootstrap --variant=minbase bookworm from $MIRROR (about a minute)"
debootstrap --variant=minbase bookworm "$DIR" "$MIRROR" > "$DIR.log" 2>&1 || { tail -20 "$DIR.log" >&2; exit 1; }
rm -rf "$DIR"/var/lib/apt/lists/* "$DIR"/var/cache/apt/*.bin "$DIR"/var/cache/apt/archives/*.deb
tar -C "$DIR" -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' - "$NAME" >/dev/null
echo "base-image: $NAME in $(( $(date +%s) - t0 )) s"
