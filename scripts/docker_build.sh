#!/usr/bin/env bash
# `docker build` with BuildKit (the Dockerfiles use secret mounts), whichever Docker CLI this host has:
# `docker buildx build --load` when the buildx plugin is there, else the built-in BuildKit of a
# Docker CLI older than 23 (Debian bookworm's docker.io). Arguments go to the build. A failed build
# stops with the Dockerfile, the failing step (BuildKit prints it above) and how to resume.
set -uo pipefail
dockerfile=?; prev=
for a in "$@"; do [ "$prev" = -f ] && dockerfile=$a; prev=$a; done
command -v docker >/dev/null 2>&1 || { echo "docker build: no docker command. Fix: install Docker (e.g. apt-get install docker.io)" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "docker build ($dockerfile): no Docker engine answers. Fix: start it (systemctl start docker, or dockerd &)" >&2; exit 2; }
build=()
for cli in docker /usr/bin/docker; do
  command -v "$cli" >/dev/null 2>&1 || continue
  if "$cli" buildx version >/dev/null 2>&1; then build=("$cli" buildx build --load); break; fi
  ver=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || echo 99)
  if [ "${ver%%.*}" -lt 23 ] 2>/dev/null; then build=(env DOCKER_BUILDKIT=1 "$cli" build); break; fi
done
if [ ${#build[@]} -eq 0 ]; then
  echo "docker build: BuildKit is needed (the Dockerfiles use secret mounts) but this Docker CLI has no buildx" \
       "plugin. Fix: install it (docker-buildx-plugin, or Debian's docker-buildx), or use Debian's docker.io CLI" >&2
  exit 2
fi
"${build[@]}" "$@"
rc=$?
if [ $rc -ne 0 ]; then
  echo "docker build of $dockerfile failed (exit $rc) at the step BuildKit names above." \
       "Fix that step's cause (network: the CA bundle is CA_BUNDLE=...; a package version: requirements/), then rerun" \
       "the same make target: finished layers are cached and the build resumes at the failed step." >&2
fi
exit $rc
