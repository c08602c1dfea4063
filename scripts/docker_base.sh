#!/usr/bin/env bash
# Which base image a Dockerfile builds on here: its pinned default (ARG BASE_IMAGE=...) when present or
# pullable, else the local Debian base from `make base-image` (built now if missing). Prints the name;
# exits 2 (with the reason on stderr) when neither can be had.
#   bash scripts/docker_base.sh docker/Dockerfile.serve supportlm-base:bookworm
set -uo pipefail
DOCKERFILE=$1 LOCAL=$2
PINNED=$(sed -n 's/^ARG BASE_IMAGE=//p' "$DOCKERFILE" | head -1)
if docker image inspect "$PINNED" >/dev/null 2>&1; then echo "$PINNED"; exit 0; fi
if timeout 60 docker pull -q "$PINNED" >/dev/null 2>&1; then echo "$PINNED"; exit 0; fi
if docker image inspect "$LOCAL" >/dev/null 2>&1; then
  echo "docker: $PINNED cannot be pulled here; building on the local base $LOCAL (make base-image)" >&2
  echo "$LOCAL"; exit 0
fi
echo "docker: the base $PINNED cannot be pulled here; building $LOCAL from Debian packages (make base-image)" >&2
bash "$(dirname "$0")/base_image.sh" "$LOCAL" >&2 || exit 2
echo "$LOCAL"
