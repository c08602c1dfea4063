"""Start-up cost of the trainer's inputs: tokenized at start-up vs sliced from data/formatted/*.tokens.arrow.

    .venv/bin/python scripts/train_startup.py        # after `dvc repro format`; writes reports/train_startup.json

Three sizes, one run, the same machine: the CPU default's seeded 320 rows, the whole train split, and
27,000 rows (the GPU profile's size; the train split repeated, JSONL and Arrow alike). Each is loaded both
ways by `train.inputs.split_examples`, and the two example lists must be equal.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from supportlm.data.format import tokens_path
from supportlm.runtime import cpu_info
from supportlm.tokenizer import load_tokenizer
from supportlm.train.inputs import split_examples

ROOT = Path(__file__).resolve().parents[1]
BIG = 27_000


def repeated(src: Path, rows: int, out: Path) -> Path:
    """`src` (JSONL + its .tokens.arrow) repeated to `rows` rows under `out`."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    reps = -(-rows // len(lines))
    path = out / "train.jsonl"
    path.write_text("".join((lines * reps)[:rows]), encoding="utf-8")
    table = pa.ipc.open_file(pa.memory_map(str(tokens_path(src)))).read_all()
    big = pa.concat_tables([table] * reps).slice(0, rows)
    with pa.OSFile(str(tokens_path(path)), "wb") as sink, pa.ipc.new_file(sink, big.schema) as writer:
        writer.write_table(big)
    return path


def timed(path: Path, tokenizer: object, rows: int | None) -> dict[str, float]:
    arrow = tokens_path(path)
    t = time.perf_counter()
    mapped, _ = split_examples(path, tokenizer, rows, 42, 512)
    mapped_s = time.perf_counter() - t
    aside = arrow.rename(arrow.with_name("aside.arrow"))
    try:
        t = time.perf_counter()
        tokenized, _ = split_examples(path, tokenizer, rows, 42, 512)
        tokenized_s = time.perf_counter() - t
    finally:
        aside.rename(arrow)
    assert mapped == tokenized, f"{path}: the two paths gave different examples"
    return {"examples": len(mapped), "tokenized_s": round(tokenized_s, 2), "memory_mapped_s": round(mapped_s, 3),
            "ratio": round(tokenized_s / mapped_s, 1)}  # fmt: skip


def main() -> None:
    tokenizer = load_tokenizer(ROOT / "models" / "base")
    train = ROOT / "data" / "formatted" / "train.jsonl"
    n_split = sum(1 for _ in train.open(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "cpu_default_320_rows": timed(train, tokenizer, 320),
            f"train_split_{n_split}_rows": timed(train, tokenizer, None),
            f"repeated_{BIG}_rows": timed(repeated(train, BIG, Path(tmp)), tokenizer, None),
        }
    report = {"what": __doc__.split("\n")[0], "runs": runs, "cpu": cpu_info()}
    (ROOT / "reports" / "train_startup.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
