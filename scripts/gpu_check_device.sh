#!/usr/bin/env bash
# The GPU check of issue 14 on a CUDA host whose preinstalled torch/transformers/peft/accelerate stack
# is used as it is (no network): installs the carried wheels (.whl/, from scripts/gpu_check_wheels.sh)
# into $SITE where a package is missing, runs `python -m supportlm.gpu_check` (~5 min on one H200),
# and copies reports/gpu/{gpu_check.json,gpu_check.md,gpu_check.log} and the children's logs to $OUT
# when $OUT is set (a lent device machine). Extra arguments go to the check.
#
#   bash scripts/gpu_check_wheels.sh          # here, once: .whl/ (~27 MB)
#   bash scripts/gpu_check_device.sh          # there (device run: carry [".whl"], timeout_s 600)
#   make gpu-check                            # the same, on a GPU host
#
# Exit status: the check's (1 = a step failed, see gpu_check.json `failed`), 3 = the wheels did not install.
set -uo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
pipi() { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"; }

export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import pydantic, bitsandbytes, torchao" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run scripts/gpu_check_wheels.sh and carry .whl" >&2; exit 3; }
  pipi .whl/*.whl || exit 3
  # pydantic 2.14 needs typing_extensions >= 4.16; the carried one goes in only where the host's is older
  if ! "$PY" -c "import sys, importlib.metadata as m; sys.exit(tuple(map(int, m.version('typing_extensions').split('.')[:2])) < (4, 16))"; then
    pipi .whl/opt/typing_extensions-*.whl || exit 3
  fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader 2>/dev/null
"$PY" - <<'EOF' || exit 3
import importlib.metadata as m, sys, torch
names = ["torch", "transformers", "peft", "accelerate", "bitsandbytes", "torchao", "pydantic", "typing_extensions", "safetensors"]
print("python", sys.version.split()[0], "|", ", ".join(f"{n} {m.version(n)}" for n in names),
      "| cuda", torch.version.cuda, torch.cuda.is_available(), flush=True)
import bitsandbytes, pydantic, supportlm.train.trainer, supportlm.serve.batch, supportlm.quantize.torch_quant  # noqa
EOF
echo "setup $(( $(date +%s) - t0 )) s"

mkdir -p reports/gpu
# the check keeps its own time budget; this is the backstop (gpu_check.json is rewritten after every step)
timeout --signal=TERM --kill-after=20 "${GPU_CHECK_TIMEOUT:-540}" "$PY" -m supportlm.gpu_check "$@" 2>&1 \
  | tee reports/gpu/gpu_check.log
rc=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp reports/gpu/gpu_check.json reports/gpu/gpu_check.md reports/gpu/gpu_check.log "$OUT"/ 2>/dev/null
  cp reports/gpu/logs/*.log "$OUT"/ 2>/dev/null
fi
echo "gpu check: exit $rc after $(( $(date +%s) - t0 )) s"
cat reports/gpu/gpu_check.md 2>/dev/null
exit "$rc"
