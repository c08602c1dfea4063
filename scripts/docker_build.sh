#!/usr/bin/env bash
# `docker build` with BuildKit (the Dockerfiles use secret mounts), whichever Docker CLI this host has:
# `docker buildx build --load` when the buildx plugin is there, else the built-in BuildKit of a
# Docker CLI older than 23 (Debian bookworm's docker.io). Arguments go to the build.
set -uo pipefail
for cli in docker /usr/bin/docker; do
  command -v "$cli" >/dev/null 2>&1 || continue
  if "$cli" buildx version >/dev/null 2>&1; then exec "$cli" buildx build --load "$@"; fi
  ver=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || echo 99)
  if [ "${ver%%.*}" -lt 23 ] 2>/dev/null; then DOCKER_BUILDKIT=1 exec "$cli" build "$@"; fi
done
echo "docker build: BuildKit is needed (the Dockerfiles use secret mounts) but this Docker CLI has no buildx" \
     "plugin. Fix: install it (docker-buildx-plugin, or Debian's docker-buildx), or use Debian's docker.io CLI" >&2
exit 2
