#!/usr/bin/env bash
# Wheels the GPU check carries to a device whose preinstalled stack lacks them (`make gpu-check` on a
# lent GPU: no network there). Writes .whl/ (git-ignored through .git/info/exclude):
#
#   .whl/*.whl      pydantic, pydantic-core (cp312), annotated-types, typing-inspection, bitsandbytes,
#                   torchao (3.4 MB: the 4-bit GPU variant, torch_quant.py torchao_int4)
#   .whl/opt/*.whl  typing_extensions, installed there only when the device's is older than pydantic needs
#
# Versions come from requirements/constraints-gpu.txt. The bitsandbytes wheel (43 MB, every CUDA, ROCm
# and XPU build) is slimmed to its CPU + CUDA 12.4-13.2 libraries (~26 MB) so that the tree and the
# wheels fit the device's 64 MiB carry limit; RECORD keeps the hashes of the files left.
#
#   bash scripts/gpu_check_wheels.sh        # then: scripts/gpu_check_device.sh on the device
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >>"$exclude"

pin() { grep -i "^$1==" requirements/constraints-gpu.txt | head -1; }
PY=${PYTHON:-python3}
PLAT=(--only-binary=:all: --no-deps --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
rm -rf .whl && mkdir -p .whl/opt .whl/full
"$PY" -m pip download -q "${PLAT[@]}" -d .whl \
  "$(pin pydantic)" "$(pin pydantic_core)" "$(pin annotated-types)" "$(pin typing-inspection)" "$(pin torchao)"
"$PY" -m pip download -q "${PLAT[@]}" -d .whl/opt "$(pin typing_extensions)"
"$PY" -m pip download -q "${PLAT[@]}" -d .whl/full "$(pin bitsandbytes)"

"$PY" - <<'PYEOF'
"""Copy the bitsandbytes wheel without the native libraries a CUDA 12.4+ torch never loads."""
import re
import zipfile
from pathlib import Path

src = next(Path(".whl/full").glob("bitsandbytes-*.whl"))
dst = Path(".whl") / src.name
drop = re.compile(r"bitsandbytes/libbitsandbytes_(rocm\d+|xpu\d+|cuda11\d|cuda12[0-3])\.(so|dll|dylib)$")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if drop.search(info.filename):
            continue
        data = zin.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(ln for ln in lines if not drop.search(ln.split(",", 1)[0])).encode()
        zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
print(f"{src.name}: {src.stat().st_size / 2**20:.1f} MiB -> {dst.stat().st_size / 2**20:.1f} MiB")
PYEOF
rm -rf .whl/full
du -ah .whl | sort -h | tail -8
