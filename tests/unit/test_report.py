"""Report stage: index.md / index.html rendered from fixture JSON files in tmp_path.

`make_reports(tmp_path)` builds a small but complete reports/ tree (every stage's JSON, tiny PNG plots,
the detailed .md/.html reports, params.yaml, dvc.lock); tests/integration/test_report_browser.py opens
the same tree in headless Chromium.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import pytest

from supportlm.config import ReportParams
from supportlm.paths import Paths
from supportlm.report.run import run_report
from supportlm.report.targets import collect_targets
from tests.stage_params import project_params


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x30\x80\xd0" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _w(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")


def make_reports(root: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """A project root with reports/ holding every stage's JSON except the names in `skip`."""
    rep = root / "reports"
    files: dict[str, object] = {
        "ingest.json": {"rows": 12600, "rejected": 0, "params_hash": "aaa111"},
        "clean.json": {"rows_in": 12600, "rows_kept": 11907, "rows_quarantined": 693,
                       "by_reason": {"exact_duplicate": 252, "too_long": 63}, "rows_changed": 1306},
        "split.json": {"counts": {"train": 9526, "val": 1195, "test": 1186}, "leaked_groups": 0},
        "format.json": {"splits": {"train": {"tokens_total": 1000, "tokens_mean": 180.5, "tokens_p95": 290,
                                             "tokens_max": 370, "truncated_rows": 0}}},
        "data_quality.json": {"summary": {"warnings": ["intent drift val/test 0.12"]},
                              "label_consistency": {"summary": {"issues": 327, "oof_accuracy": 0.96,
                                                                "mean_label_quality": 0.87}},
                              "dedup": {"exact_duplicates_removed": 252, "near_duplicates_removed": 252,
                                        "leaked_groups": 0}},
        "data_scaling.json": {"runs": [{"rows": 27000, "total_seconds": 118.6, "peak_rss_mb": 1041,
                                        "rows_kept": 25503}],
                              "targets": [{"name": "27,000 rows pipeline", "goal": "<= 120 s", "measured": 118.6,
                                           "met": True},
                                          {"name": "270,000 rows vs 27,000 time ratio", "goal": "<= 12x",
                                           "measured": 14.2, "met": False}]},
        "train.json": {"base_val_loss": 2.1, "best_val_loss": 1.4, "best_step": 60, "tokens_per_s": 2100.0,
                       "baseline_tokens_per_s": 1200.0, "speedup_vs_baseline": 1.75, "peak_mem_mb": 3100,
                       "mlflow_run_id": "abc123", "device": "cpu", "method": "lora", "precision": "fp32",
                       "val_curve": [{"step": 20, "val_loss": 1.6}, {"step": 40, "val_loss": 1.45},
                                     {"step": 60, "val_loss": 1.4}],
                       "params_hash": "bbb222", "base_model": "bundled:smollm2-135m-instruct"},
        "eval.json": {"base": {"perplexity": 9.0, "bleu": 4.0, "rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.15},
                      "finetuned": {"perplexity": 5.5, "bleu": 12.0, "rouge1": 0.35, "rouge2": 0.12,
                                    "rougeL": 0.28},
                      "delta": {"perplexity": -3.5, "bleu": 8.0, "rouge1": 0.15, "rouge2": 0.07, "rougeL": 0.13},
                      "sample": {"rows": 96, "intents": 27, "max_new_tokens": 128}},
        "quantization.json": {"variants": [
            {"name": "f16", "format": "gguf-f16", "size_bytes": 270_000_000, "reduction_vs_f16": 0.0,
             "perplexity": 5.5, "bleu": 12.0, "rougeL": 0.28, "tokens_per_s": 40.0},
            {"name": "q4_k_m", "format": "gguf-q4_k_m", "size_bytes": 105_000_000, "reduction_vs_f16": 0.61,
             "perplexity": 5.9, "bleu": 11.0, "rougeL": 0.25, "tokens_per_s": 60.0, "rows": 128,
             "rougeL_delta_vs_f16_points": -3.0, "rougeL_delta_ci": [-4.5, -1.5], "kl_divergence": 0.0512}],
            "served": {"name": "f16", "rule": "the stated rule"},
            "skipped": [{"name": "torchao_int4", "reason": "needs CUDA"}],
            "targets": [{"name": "q4_k_m size reduction vs f16", "goal": ">= 50%", "measured": 0.61, "met": True},
                        {"name": "q4_k_m ROUGE-L drop vs f16 (points)", "goal": "<= 2", "measured": 3.0,
                         "met": False}]},
        "bench.json": {"primary": "q4_k_m", "model_source": "quantize stage",
                       "hardware": {"cores": 2, "cpu": "AMD EPYC", "gpu": None, "llama_threads": 1,
                                    "llama_parallel": 8},
                       "runs": [{"target": "gateway", "model": "q4_k_m", "concurrency": 1, "rps": 0.5,
                                 "tokens_per_s": 45.0, "p50_ms": 2000.0, "p95_ms": 2400.0, "p99_ms": 2500.0,
                                 "ttft_ms": 300.0, "ms_per_100_tokens": 2100.0, "error_rate": 0.0}],
                       "targets": [{"name": "latency per 100 generated tokens", "goal": "< 500 ms",
                                    "measured": 2100.0, "met": False, "display": "2,100 ms"},
                                   {"name": "gateway overhead", "goal": "<= 5%", "measured": 0.02, "met": True,
                                    "display": "+2.0%"}],
                       "params_hash": "ccc333", "base_model": "bundled:smollm2-135m-instruct"},
        "human_eval_sheet.csv": "item,a,b,choice\n1,x,y,\n",
        "data_quality.md": "# Data quality\n",
        "data_quality.html": "<!doctype html><title>dq</title><p>dq</p>",
        "eval.md": "# Eval\n",
        "quantization.md": "# Quantization\n",
        "bench.md": "# Bench\n",
    }  # fmt: skip
    for name, data in files.items():
        if name not in skip:
            _w(rep / name, data)
    for stage in ("quality", "train", "eval", "quantize", "bench"):
        if not any(s.startswith(stage) or (stage == "quality" and s == "data_quality.json") for s in skip):
            (rep / "plots" / stage).mkdir(parents=True, exist_ok=True)
            (rep / "plots" / stage / f"{stage}_plot.png").write_bytes(tiny_png())
    _w(root / "params.yaml", "profile: cpu\nsplit:\n  seed: 42\n")
    _w(root / "dvc.lock", "schema: '2.0'\nstages:\n  ingest:\n    outs:\n    - path: data/raw\n"
                          "      md5: 434231ff36f00429add2ad96bc52ab57.dir\n    - path: reports/ingest.json\n"
                          "      md5: 72ac1d3abb5ce84c65d2c88862cf232d\n")  # fmt: skip
    return rep


def render(root: Path, **kw: object) -> dict:
    return run_report(project_params(report=ReportParams(**kw)), Paths(root=root))


SECTIONS = ("Targets", "Data quality", "Training", "Hyperparameter sweep", "Evaluation", "Human evaluation",
            "Quantization", "Serving benchmark", "Containers", "Lineage")  # fmt: skip


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_section_is_rendered(tmp_path: Path) -> None:
    make_reports(tmp_path)
    out = render(tmp_path)
    md = (tmp_path / "reports/index.md").read_text()
    page = (tmp_path / "reports/index.html").read_text()
    for title in SECTIONS:
        assert f"## {title}\n" in md
        assert f">{title}</h2>" in page
    # sweep.json is the one missing file
    assert out["sections"] == {"targets": "ok", "data": "ok", "train": "ok", "sweep": "not run yet", "eval": "ok",
                               "human": "ok", "quant": "ok", "bench": "ok", "fairness": "not run yet", "containers": "not run yet",
                               "lineage": "ok"}  # fmt: skip
    assert "Not run yet" in _section(md, "Hyperparameter sweep")
    # numbers are copied, not recomputed
    assert "| best step | 60 |" in md and "| speedup vs baseline | 1.75x |" in md
    assert "| rougeL | 0.15 | 0.28 | +0.13 |" in md
    assert "| q4_k_m | 128 | 105.0 | 61.0% | 5.9 | 0.25 | -3.00 [-4.50, -1.50] | 0.0512 | 60.0 |" in md
    assert "Served: `f16` (rule: the stated rule)." in md
    assert "[bench.md](bench.md)" in md and "[human_eval_sheet.csv](human_eval_sheet.csv)" in md
    assert "![bench plot](plots/bench/bench_plot.png)" in md
    # lineage: dvc.lock data hash, per-report params hash, params.yaml
    lineage = _section(md, "Lineage")
    assert "434231ff36f00429add2ad96bc52ab57.dir" in lineage and "reports/ingest.json" not in lineage
    assert "`bbb222`" in lineage and "split:" in lineage


def test_containers_section_copies_the_measured_numbers(tmp_path: Path) -> None:
    make_reports(tmp_path)
    (tmp_path / "reports/containers.json").write_text(json.dumps({
        "images": [{"name": "supportlm-train:0.1.0", "base": "supportlm-base:bookworm", "size_bytes": 7_123_000_000,
                    "build_cold_s": 412.5, "build_warm_s": 1.25}],
        "docker_smoke_s": 300.0, "host_smoke_s": 240.0, "compose_ready_s": 9.5,
        "comparison": {"data_stages": {"ingest": {"equal": True}, "split": {"equal": True}},
                       "metrics": [{"file": "reports/train.json", "key": "best_val_loss", "host": 2.5, "containers": 2.5001,
                                    "abs_diff": 1e-4, "tolerance": 1e-3, "within": True}]},
        "cpu": {"model": "Test CPU", "cores": 2, "isa": ["avx2"]}}))  # fmt: skip
    out = render(tmp_path)
    assert out["sections"]["containers"] == "ok"
    md = _section((tmp_path / "reports/index.md").read_text(), "Containers")
    assert "| supportlm-train:0.1.0 | supportlm-base:bookworm | 7,123 | 412.5 | 1.25 |" in md
    assert "containers/host = 1.25x" in md and "2/2 stages" in md and "ready in 9.5 s" in md
    assert "Test CPU, 2 cores, avx2" in md


def test_data_scaling_tables_say_which_stages_each_run_timed(tmp_path: Path) -> None:
    """A run kept from an earlier commit (no format stage) shows its own commit and "not timed"."""
    make_reports(tmp_path)
    st = lambda s, mb: {"seconds": s, "peak_rss_mb": mb}
    (tmp_path / "reports/data_scaling.json").write_text(json.dumps({
        "cpu_model": "Test CPU", "cpu_count": 2, "git_sha": "aaaaaaa1111",
        "runs": [{"rows": 27000, "total_seconds": 80.0, "git_sha": "aaaaaaa1111",
                  "stages": {"ingest": st(2.0, 80), "clean": st(40.0, 440), "format": st(20.0, 560)}},
                 {"rows": 1000000, "total_seconds": 2298.1, "git_sha": "bbbbbbb2222",
                  "stages": {"ingest": st(74.5, 1762), "clean": st(1478.8, 3178)}}]}))  # fmt: skip
    render(tmp_path)
    md = _section((tmp_path / "reports/index.md").read_text(), "Data quality")
    assert "| 27,000 | 2.0 s, 80 MB | 40.0 s, 440 MB | 20.0 s, 560 MB |" in md
    assert "| 1,000,000 | 74.5 s, 1,762 MB | 1,478.8 s, 3,178 MB | not timed |" in md
    assert "| aaaaaaa |" in md and "| bbbbbbb |" in md


def test_fairness_section_copies_phases_and_targets(tmp_path: Path) -> None:
    make_reports(tmp_path)
    phase = {"requests": 60, "ok": 60, "statuses": {"200": 60}, "p50_ms": 500.0, "p95_ms": 800.0, "tokens_per_s": 30.0}
    (tmp_path / "reports/fairness.json").write_text(json.dumps({
        "phases": {"fair/polite_alone": {"polite": phase}},
        "load": {"abuser_clients": 48, "abuser_max_tokens": 512, "polite_rps": 1.0, "polite_max_tokens": 32},
        "limits": {"per_key_concurrency": None, "fair_window_s": 10.0, "max_concurrency": 8},
        "hardware": {"cpu": "Test CPU", "cores": 2},
        "targets": [{"name": "polite p95 under the flood / solo p95", "goal": "<= 3x", "measured": 10.7,
                     "met": False}]}))  # fmt: skip
    out = render(tmp_path)
    assert out["sections"]["fairness"] == "ok"
    md = _section((tmp_path / "reports/index.md").read_text(), "Fairness between API keys")
    assert "| fair/polite_alone | polite | 60 | 200: 60 | 500 | 800 | 30 |" in md.replace(".0 |", " |")
    assert "Test CPU, 2 cores" in md and "48 connections" in md
    targets = (tmp_path / "reports/index.md").read_text()
    assert "polite p95 under the flood / solo p95" in targets


def test_missing_json_sections_say_not_run_yet(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    out = render(tmp_path)
    md = (tmp_path / "reports/index.md").read_text()
    assert all(v == "not run yet" for k, v in out["sections"].items() if k != "lineage")
    for title in SECTIONS[1:-1]:
        assert "Not run yet" in _section(md, title), title
    assert "No stage has written targets yet." in md
    assert out["targets_total"] == 0


def test_partial_pipeline(tmp_path: Path) -> None:
    make_reports(tmp_path, skip=("train.json", "eval.json", "bench.json", "human_eval_sheet.csv"))
    out = render(tmp_path)
    assert out["sections"]["train"] == out["sections"]["eval"] == out["sections"]["bench"] == "not run yet"
    assert out["sections"]["human"] == "not run yet" and out["sections"]["quant"] == "ok"
    assert {t["stage"] for t in out["targets"]} == {"data", "data scaling", "quantize"}


def test_targets_table_met_and_missed(tmp_path: Path) -> None:
    rep = make_reports(tmp_path)
    targets = collect_targets(rep)
    got = {(t["stage"], t["name"]): t["met"] for t in targets}
    assert got == {
        ("data", "duplicate groups leaking across splits"): True,
        ("data scaling", "27,000 rows pipeline"): True,
        ("data scaling", "270,000 rows vs 27,000 time ratio"): False,
        ("train", "training tokens/s vs naive padded batching"): True,  # 1.75 >= 1.5
        ("evaluate", "fine-tuned ROUGE-L above base"): True,
        ("evaluate", "fine-tuned perplexity below base"): True,
        ("quantize", "q4_k_m size reduction vs f16"): True,
        ("quantize", "q4_k_m ROUGE-L drop vs f16 (points)"): False,
        ("bench", "latency per 100 generated tokens"): False,
        ("bench", "gateway overhead"): True,
    }
    md = render(tmp_path) and (rep / "index.md").read_text()
    table = _section(md, "Targets")
    assert "7 of 10 targets met" in table
    assert "| quantize | q4_k_m size reduction vs f16 | >= 50% | 61.0% | met |" in table
    assert "| bench | latency per 100 generated tokens | < 500 ms | 2,100 ms | **missed** | [bench.md](bench.md) |" \
        in table
    assert "| train | training tokens/s vs naive padded batching | >= 1.5x | 1.75x | met |" in table
    page = (rep / "index.html").read_text()
    assert page.count('<tr class="missed">') == 3 and page.count('<tr class="met">') == 7


@pytest.mark.parametrize(
    ("train", "met"),
    [({"speedup_vs_baseline": 1.2}, False), ({"speedup_vs_baseline": None}, None),
     ({"targets": [{"name": "own", "goal": "x", "measured": 1, "met": True}]}, True)],
)  # fmt: skip
def test_train_target_variants(tmp_path: Path, train: dict, met: bool | None) -> None:
    rep = tmp_path / "reports"
    _w(rep / "train.json", train)
    (t,) = collect_targets(rep)
    assert t["met"] is met
    md = render(tmp_path) and (rep / "index.md").read_text()
    assert ("not measured" in _section(md, "Targets")) is (met is None)


def test_html_is_self_contained(tmp_path: Path) -> None:
    rep = make_reports(tmp_path)
    render(tmp_path)
    page = (rep / "index.html").read_text()
    assert "<style>" in page and "<link" not in page and "<script" not in page
    assert not re.search(r"""(src|href)=["']https?://""", page)
    srcs = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for href in re.findall(r'<a href="([^"#][^"]*)"', page):
        assert (rep / href).is_file(), href


def test_html_relative_images_when_not_embedded(tmp_path: Path) -> None:
    rep = make_reports(tmp_path)
    render(tmp_path, embed_images=False)
    srcs = re.findall(r'<img alt="[^"]*" src="([^"]+)"', (rep / "index.html").read_text())
    assert srcs and all((rep / s).is_file() for s in srcs)


def test_unreadable_json_does_not_break_the_report(tmp_path: Path) -> None:
    rep = make_reports(tmp_path)
    (rep / "eval.json").write_text("{not json")
    (rep / "bench.json").write_text(json.dumps({"runs": "oops", "targets": []}))
    out = render(tmp_path)
    md = (rep / "index.md").read_text()
    assert out["sections"]["quant"] == "ok" and "## Evaluation" in md and "## Serving benchmark" in md
    assert "eval.json is not valid JSON" in _section(md, "Evaluation")
    assert "Could not render this section" in _section(md, "Serving benchmark")


@pytest.mark.parametrize(("seconds", "device", "met"), [(432.0, "cpu (2 thread(s))", True),
                                                       (2186.7, "cpu (2 thread(s))", False),
                                                       (900.0, "cuda (NVIDIA H100)", None)])  # fmt: skip
def test_train_stage_budget_applies_to_the_cpu_default_only(tmp_path: Path, seconds, device, met) -> None:
    rep = tmp_path / "reports"
    _w(rep / "train.json", {"speedup_vs_baseline": 2.0, "stage_seconds": seconds, "device": device})
    by = {t["name"]: t for t in collect_targets(rep)}
    budget = by.get("train stage time on the CPU default")
    if met is None:
        assert budget is None  # a GPU run has no 12-minute CPU budget to meet
    else:
        assert budget["met"] is met and budget["display"] == f"{seconds / 60:.1f} min"


def test_train_stage_budget_is_not_judged_on_a_resumed_run(tmp_path: Path) -> None:
    """A stage run that resumed a finished run took seconds: that is not the training's time."""
    rep = tmp_path / "reports"
    _w(rep / "train.json", {"stage_seconds": 41.8, "device": "cpu (2 thread(s))", "resumed_from": 40,
                            "train_seconds": 441.0})  # fmt: skip
    budget = {t["name"]: t for t in collect_targets(rep)}["train stage time on the CPU default"]
    assert budget["met"] is None and budget["measured"] is None
    assert budget["display"] == "not measured: this run resumed at step 40 (0.7 min); 7.3 min in optimizer steps over the whole run"
