#!/usr/bin/env bash
# `make all DOCKER=1 [PROFILE=...]` (and `make all PROFILE=gpu`): every DVC stage in the training image.
# The host needs only bash, make and Docker: the plan is computed inside the image (python -m supportlm
# docker-plan) and printed one `label<TAB>command` per step; this script runs the steps in order and stops at
# the first failure naming the stage, the command, what the exit status means and how to resume.
#   bash scripts/docker_all.sh IMAGE      (PROFILE from the environment, empty = params.yaml as is;
#                                         DRY_RUN=1 prints the commands and runs nothing)
set -uo pipefail
cd "$(dirname "$0")/.."
IMAGE=$1
PROFILE=${PROFILE:-}
again="make all DOCKER=1${PROFILE:+ PROFILE=$PROFILE}"

fail() { echo "docker-all: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || fail "no docker command. Fix: install Docker (e.g. apt-get install docker.io), then rerun \`$again\`"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (\`docker info\` failed). Fix: start it (systemctl start docker, or dockerd &) and check that this user may use it, then rerun \`$again\`"
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "image $IMAGE not found. Fix: make docker-build-train"

gpu=
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=--gpu; fi
# the HF cache exists before Docker mounts it: created by dockerd it would belong to root and the stages,
# which run as the caller, could not write to it
HF_HOST=${HF_HOME:-$HOME/.cache/huggingface}
mkdir -p "$HF_HOST" || fail "cannot create the HF cache folder $HF_HOST (set HF_HOME to a writable folder)"

# exit status of `docker run` in words (the stage's own error is printed above it by the container)
meaning() {
  local rc=$1
  case $rc in
    125) echo "docker could not start the container (daemon error, bad flag, or the image/GPU runtime is missing)";;
    126) echo "the command in the container could not be invoked";;
    127) echo "the command was not found in the image";;
    132) echo "killed by signal SIGILL (illegal instruction: a binary in the image uses CPU instructions this machine lacks)";;
    134) echo "killed by signal SIGABRT (aborted: a native library failed an internal check)";;
    137) echo "killed by SIGKILL (often the kernel's out-of-memory killer: give the container more memory)";;
    139) echo "killed by signal SIGSEGV (segmentation fault in native code)";;
    *) local sig=""
       if [ "$rc" -gt 128 ] && [ "$rc" -le 192 ]; then sig=$(kill -l $((rc - 128)) 2>/dev/null); fi
       if [ -n "$sig" ]; then echo "killed by signal SIG$sig"; else echo "exit status $rc (the stage's error is above)"; fi;;
  esac
}

plan=$(docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/workspace" -w /workspace "$IMAGE" \
         python -m supportlm docker-plan --root "$PWD" --uid "$(id -u)" --gid "$(id -g)" --hf-home "$HF_HOST" \
         ${PROFILE:+--profile "$PROFILE"} ${GPUS:+--set "train.num_processes=$GPUS"} \
         ${FSDP:+--set train.strategy=fsdp --set train.method=lora} --image "$IMAGE" $gpu) \
  || fail "could not compute the plan in $IMAGE (its error is above); nothing was run"

if [ -n "${DRY_RUN:-}" ]; then cut -f2- <<< "$plan"; exit 0; fi
echo "docker-all: $(grep -c . <<< "$plan") steps in $IMAGE${PROFILE:+, profile $PROFILE}${gpu:+, with the GPU}"
t_all=$SECONDS
step=0
while IFS=$'\t' read -r label line; do
  step=$((step + 1))
  [ -n "$label" ] || continue
  echo "== [$label] $line"
  t0=$SECONDS
  bash -c "$line" </dev/null
  rc=$?
  if [ "$rc" -ne 0 ]; then
    # steps labelled `cleanup` (stopping TGI) run even after a failure, so nothing outlives the run
    awk -F'\t' -v from="$step" 'NR > from && $1 == "cleanup"' <<< "$plan" | while IFS=$'\t' read -r _ cleanup; do
      echo "== [cleanup] $cleanup"; bash -c "$cleanup" </dev/null || true
    done
    echo "docker-all: stage '$label' failed: $(meaning "$rc")." >&2
    echo "  command: $line" >&2
    echo "  fix the cause and rerun \`$again\`: finished stages are up to date in dvc.lock and are skipped, so the run resumes at '$label'." >&2
    exit 1
  fi
  echo "== [$label] ok in $((SECONDS - t0)) s"
done <<< "$plan"
echo "docker-all: every stage done in $((SECONDS - t_all)) s"
