"""Decode and prompt speed of llama.cpp builds side by side, in one run on one machine.

    python -m supportlm.bench.build_compare --build native=/tmp/ll-native/bin --build host=DIR \
        --out reports/llama_build.json

Why: the build recipe (named instruction sets instead of -march=native, so no AMX kernels) must keep
the speed; the only honest comparison is the same models, threads and machine, interleaved, in one
run. Each GGUF type the pipeline serves is requantized from the bundled SmolLM2 (the same weights for
every build); every llama-bench call runs as a child whose crash (e.g. SIGILL) is recorded, not fatal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from supportlm import llamacpp
from supportlm.bench.engine_tuning import TuningError, llama_bench
from supportlm.render import Document, fmt
from supportlm.runtime import ChildCrashed, check_exit, cpu_info

TYPES = ("f16", "q8_0", "q4_k_m", "q4_0")


def requantized(work: Path, types: tuple[str, ...] = TYPES) -> dict[str, Path]:
    """The bundled SmolLM2 GGUF (q4_1) requantized to each type with the project's llama-quantize."""
    from supportlm.train.base_model import bundled_gguf

    src = bundled_gguf("bundled:smollm2-135m-instruct")
    out = {}
    for qtype in types:
        dst = work / f"smollm2-{qtype}.gguf"
        cmd = [str(llamacpp.tool("llama-quantize")), "--allow-requantize", str(src), str(dst), qtype.upper()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        check_exit(cmd[0], res.returncode, res.stderr)
        if res.returncode != 0:
            raise TuningError(f"llama-quantize {qtype} failed:\n{res.stderr[-1500:]}")
        out[qtype] = dst
    return out


def compare(builds: dict[str, Path], models: dict[str, Path], threads: int = 2, repeats: int = 5,
            n_prompt: int = 128, n_gen: int = 64) -> dict[str, Any]:  # fmt: skip
    """{cpu, builds, rows: [{type, test, <build>: tok/s | "crashed: ..."}], ratios vs the first build}."""
    rows = []
    for qtype, model in models.items():
        for test, (pp, tg) in (("decode", (0, n_gen)), ("prompt", (n_prompt, 0))):
            row: dict[str, Any] = {"type": qtype, "test": f"{test} ({'tg' if tg else 'pp'}{tg or pp})"}
            for name, bin_dir in builds.items():  # interleaved: drift hits every build alike
                try:
                    r = llama_bench(model, threads=threads, n_prompt=pp, n_gen=tg, repeats=repeats,
                                    exe=bin_dir / "llama-bench")  # fmt: skip
                    row[name] = r["tokens_per_s"]
                    row[f"{name}_stddev"] = r["stddev_tokens_per_s"]
                except (ChildCrashed, TuningError) as exc:
                    row[name] = f"failed: {str(exc).splitlines()[0]}"
            rows.append(row)
    names = list(builds)
    for row in rows:
        base = row.get(names[0])
        for name in names[1:]:
            v = row.get(name)
            ok = isinstance(base, float) and isinstance(v, float)
            row[f"{name}_vs_{names[0]}"] = round(v / base, 3) if ok else None
    return {"cpu": cpu_info(), "threads": threads, "repeats": repeats,
            "builds": {n: str(p) for n, p in builds.items()}, "rows": rows}  # fmt: skip


def to_markdown(r: dict[str, Any]) -> str:
    """tokens/s per GGUF type and test for every build, and each build's ratio to the first."""
    names, cpu = list(r["builds"]), r["cpu"]
    doc = Document()
    doc.h(1, "llama.cpp builds compared (tokens/s, llama-bench, one run)")
    doc.p(
        f"CPU: {cpu['model']} ({cpu['cores']} cores; {' '.join(cpu['isa'])}); {r['threads']} threads, "
        f"{r['repeats']} repeats; model: bundled SmolLM2-135M requantized to each type."
    )
    ratio_keys = [f"{n}_vs_{names[0]}" for n in names[1:]]
    rows = [[row["type"], row["test"], *(fmt(row[n], ".1f") for n in names),
             *(f"{row[k]:.2f}x" if row[k] else "–" for k in ratio_keys)] for row in r["rows"]]  # fmt: skip
    header = ["type", "test", *names, *(f"{n} / {names[0]}" for n in names[1:])]
    doc.table(header, rows, align_right=range(2, len(header)))
    doc.p("Builds: " + "; ".join(f"`{n}` = {p}" for n, p in r["builds"].items()))
    return doc.to_md()


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - manual benchmark
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="append", required=True, help="NAME=DIR holding llama-bench")
    ap.add_argument("--out", type=Path, default=Path("reports/llama_build.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    builds = {b.split("=", 1)[0]: Path(b.split("=", 1)[1]) for b in a.build}
    with tempfile.TemporaryDirectory() as tmp:
        result = compare(builds, requantized(Path(tmp)), threads=a.threads, repeats=a.repeats)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":  # pragma: no cover
    main()
