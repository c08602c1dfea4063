#!/usr/bin/env bash
# `make pin-images`: pin every image this project pulls from a registry by its digest, in place, on a
# host that can reach the registries. Each `name:tag` (or `name:tag@sha256:old`) in docker/compose.yaml,
# src/supportlm/docker_plan.py and docker/Dockerfile.* becomes `name:tag@sha256:<digest served for the
# tag now>`; docker then pulls exactly that image whatever the tag points to later. Run it, review the
# diff (`git diff`), commit. Images built here (supportlm-*) are not pulled and not touched.
#
#   bash scripts/pin_images.sh            # or: make pin-images
set -euo pipefail
cd "$(dirname "$0")/.."
files=(docker/compose.yaml src/supportlm/docker_plan.py docker/Dockerfile.*)
# where images are named: compose `image:`, Dockerfile `ARG BASE_IMAGE=`, docker_plan.py `*_IMAGE = "..."`
mapfile -t refs < <(
  { sed -nE 's/^[[:space:]]*image:[[:space:]]*([^[:space:]#]+).*/\1/p' docker/compose.yaml
    sed -nE 's/^ARG BASE_IMAGE=([^[:space:]]+).*/\1/p' docker/Dockerfile.*
    sed -nE 's/^[A-Z_]*_IMAGE = "([^"]+)".*/\1/p' src/supportlm/docker_plan.py
  } | grep -v '^supportlm-' | grep ':' | sed -E 's/@sha256:.*//' | sort -u)
[ ${#refs[@]} -gt 0 ] || { echo "pin-images: no registry image found in ${files[*]}" >&2; exit 1; }
for tag in "${refs[@]}"; do
  repo=${tag%:*}
  docker pull -q "$tag" >/dev/null ||
    { echo "pin-images: cannot pull $tag (registry unreachable, or the tag is gone); nothing changed for it" >&2; exit 1; }
  digest=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$tag" | grep -m1 "^$repo@" | cut -d@ -f2 || true)
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] ||
    { echo "pin-images: docker reports no registry digest for $tag (RepoDigests is empty)" >&2; exit 1; }
  escaped=$(printf '%s' "$tag" | sed 's/[.[\*^$/]/\\&/g')
  sed -i -E "s#${escaped}(@sha256:[0-9a-f]{64})?#${tag}@${digest}#g" "${files[@]}"
  echo "$tag@$digest"
done
