"""One report section per stage, each built from that stage's JSON file (nothing is recomputed)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportlm.render import Block, Code, Details, Image, Inline, Link, Para, Section, Strong, Table, pct
from supportlm.render import fmt as num

log = logging.getLogger("supportlm.report")


# ---------------------------------------------------------------- helpers (formatting only)


def load_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s)", path, exc)
        return {"_error": f"{path.name} is not valid JSON: {exc}"}
    return data if isinstance(data, dict) else {"_error": f"{path.name}: top level is not an object"}


def not_run(stage: str, files: str) -> list[Block]:
    cmd = stage if " " in stage else f"dvc repro {stage}"
    return [Para(["Not run yet: ", Code(files), " is missing (", Code(cmd), ")."])]


def stage_plots(reports: Path, stage: str) -> list[Block]:
    d = reports / "plots" / stage
    return [Image(p, p.stem.replace("_", " ")) for p in sorted(d.glob("*.png"))] if d.is_dir() else []


def links(reports: Path, names: list[str]) -> list[Inline]:
    """Links to those detailed reports that exist next to index.*, comma-separated."""
    out: list[Inline] = []
    for name in names:
        if (reports / name).is_file():
            out += ([", "] if out else []) + [Link(name, name)]
    return out


def details_para(reports: Path, names: list[str]) -> list[Block]:
    ls = links(reports, names)
    return [Para(["Details: ", *ls])] if ls else []


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class SectionBuilder:
    """One section of the index: its anchor and title, the file(s) it reads, the command that makes them.

    `body` gets the parsed JSON (`reads_json`) or reads reports/ itself; it returns the blocks, or None
    when its input is missing. A missing file says "not run yet", an unreadable one shows its error."""

    key: str
    title: str
    source: str  # shown in the "not run yet" note
    command: str  # a stage name, or a command with a space
    body: Callable[..., list[Block] | None]
    reads_json: bool = True

    def __call__(self, reports: Path, max_rows: int) -> Section:
        if self.reads_json:
            data = load_json(reports / self.source)
            if data is not None and "_error" in data:
                return Section(self.key, self.title, [Para(data["_error"])])
            blocks = None if data is None else self.body(data, reports, max_rows)
        else:
            blocks = self.body(reports, max_rows)
        if blocks is None:
            return Section(self.key, self.title, not_run(self.command, f"reports/{self.source}"), ran=False)
        return Section(self.key, self.title, blocks)


def json_section(key: str, title: str, source: str, command: str) -> Callable[..., SectionBuilder]:
    """Decorates `body(data, reports, max_rows) -> blocks` for a section built from one reports/*.json."""
    return lambda body: SectionBuilder(key, title, source, command, body)


def reports_section(key: str, title: str, source: str, command: str) -> Callable[..., SectionBuilder]:
    """Decorates `body(reports, max_rows) -> blocks | None` for a section that reads several files."""
    return lambda body: SectionBuilder(key, title, source, command, body, reads_json=False)


@reports_section("data", "Data quality", "ingest.json, clean.json, split.json, data_quality.json", "quality")
def section_data(reports: Path, max_rows: int) -> list[Block] | None:
    ingest, clean, split, fmt, dq = (load_json(reports / f"{n}.json") for n in
                                     ("ingest", "clean", "split", "format", "data_quality"))  # fmt: skip
    if not any((ingest, clean, split, fmt, dq)):
        return None
    blocks: list[Block] = details_para(reports, ["data_quality.md", "data_quality.html"])
    rows: list[list[Inline]] = []
    if ingest:
        rows.append(
            ["ingest", f"{num(ingest.get('rows'), ',')} rows", f"rejected {num(ingest.get('rejected'), ',')}"]
        )
    if clean:
        reasons = ", ".join(f"{k} {v:,}" for k, v in (clean.get("by_reason") or {}).items())
        rows.append(
            [
                "clean",
                f"{num(clean.get('rows_kept'), ',')} kept of {num(clean.get('rows_in'), ',')}",
                (
                    f"quarantined {num(clean.get('rows_quarantined'), ',')} ({reasons or 'none'}); "
                    f"changed {num(clean.get('rows_changed'), ',')}"
                ),
            ]
        )
    if split:
        counts = split.get("counts") or {}
        rows.append(
            [
                "split",
                " / ".join(f"{k} {v:,}" for k, v in counts.items()),
                f"leaked groups {num(split.get('leaked_groups'))}",
            ]
        )
    if fmt:
        for name, s in (fmt.get("splits") or {}).items():
            rows.append(
                [
                    f"format ({name})",
                    f"{num(s.get('tokens_total'), ',')} tokens",
                    (
                        f"mean {num(s.get('tokens_mean'))}, p95 {num(s.get('tokens_p95'))}, max "
                        f"{num(s.get('tokens_max'))} tokens/example; truncated {num(s.get('truncated_rows'))}"
                    ),
                ]
            )
    if rows:
        blocks.append(Table(["stage", "rows", "detail"], rows))
    if dq and "_error" not in dq:
        summ = dq.get("summary") or {}
        warnings = summ.get("warnings") or []
        blocks.append(Para([Strong("Quality warnings:"), " ", "; ".join(map(str, warnings[:max_rows])) if warnings
                            else "none"]))  # fmt: skip
        lc = (dq.get("label_consistency") or {}).get("summary") or {}
        if lc:
            blocks.append(
                Para(
                    f"Label consistency: {num(lc.get('issues'))} label issues flagged, out-of-fold "
                    f"accuracy {num(lc.get('oof_accuracy'))}, mean label quality "
                    f"{num(lc.get('mean_label_quality'))}."
                )
            )
        dd = dq.get("dedup") or {}
        if dd:
            blocks.append(
                Para(
                    f"Deduplication: {num(dd.get('exact_duplicates_removed'))} exact and "
                    f"{num(dd.get('near_duplicates_removed'))} near duplicates removed; "
                    f"{num(dd.get('leaked_groups'))} duplicate groups crossing splits."
                )
            )
    elif dq:
        blocks.append(Para(dq["_error"]))
    scaling = load_json(reports / "data_scaling.json")
    if scaling and scaling.get("runs"):
        blocks.append(Table(
            ["rows", "total s", "CPU s", "ms/row", "peak RSS MB (stage)", "largest worker MB", "rows kept", "git"],
            [[num(r.get("rows"), ","), num(r.get("total_seconds"), ",.1f"), num(r.get("cpu_seconds"), ",.1f"),
              num(r.get("ms_per_row"), ".2f"), f"{num(r.get('peak_rss_mb'), ',.0f')} ({r.get('peak_stage', '–')})",
              num(r.get("worker_peak_rss_mb"), ",.0f"), num(r.get("rows_kept"), ","),
              str(r.get("git_sha") or scaling.get("git_sha") or "–")[:7]] for r in scaling["runs"]],
            align_right={0, 1, 2, 3, 4, 5, 6},
            note=f"Data scaling, each stage in a fresh process (reports/data_scaling.json; "
                 f"{scaling.get('cpu_model', 'CPU not recorded')}, {scaling.get('cpu_count', '?')} cores)",
        ))  # fmt: skip
        stage_names = list(dict.fromkeys(k for r in scaling["runs"] for k in r.get("stages", {})))
        if stage_names:
            blocks.append(Table(
                ["rows", *stage_names],
                [[num(r.get("rows"), ","), *(f"{num(r['stages'][k].get('seconds'), ',.1f')} s, "
                                             f"{num(r['stages'][k].get('peak_rss_mb'), ',.0f')} MB"
                                             if k in r.get("stages", {}) else "not timed" for k in stage_names)]
                 for r in scaling["runs"]],
                align_right=set(range(len(stage_names) + 1)),
                note="Each stage's wall time and peak RSS (its own process)",
            ))  # fmt: skip
        prev = scaling.get("previous") or {}
        if prev.get("runs"):
            before = "; ".join(f"{num(r.get('rows'), ',')} rows: {num(r.get('total_seconds'), ',.0f')} s, "
                               f"{num(r.get('peak_rss_mb'), ',.0f')} MB" for r in prev["runs"])  # fmt: skip
            cpu = prev.get("cpu_model") or "CPU not recorded"
            blocks.append(Para(f"Before (git {str(prev.get('git_sha'))[:7]}, {cpu}; another run, so compare the "
                               f"memory, not the seconds): {before}."))  # fmt: skip
    return blocks + stage_plots(reports, "quality")


@json_section("train", "Training", "train.json", "train")
def section_train(t: dict[str, Any], reports: Path, max_rows: int) -> list[Block]:
    blocks: list[Block] = details_para(reports, ["train.md"])
    blocks.append(Table(["metric", "value"], [
        ["base val loss", num(t.get("base_val_loss"))],
        ["best val loss", num(t.get("best_val_loss"))],
        ["best step", num(t.get("best_step"))],
        ["tokens/s", num(t.get("tokens_per_s"), ",.0f")],
        ["baseline tokens/s (naive padding)", num(t.get("baseline_tokens_per_s"), ",.0f")],
        ["speedup vs baseline", f"{num(t.get('speedup_vs_baseline'))}x"],
        ["peak memory MB", num(t.get("peak_mem_mb"), ",.0f")],
        ["method / device / precision", f"{t.get('method', '–')} / {t.get('device', '–')} / {t.get('precision', '–')}"],
        ["MLflow run", Code(str(t.get("mlflow_run_id")))],
    ], align_right={1}))  # fmt: skip
    curve = t.get("val_curve") or []
    if curve:
        rows = [[num(c.get("step")), num(c.get("val_loss"))] for c in curve[:max_rows]]
        blocks.append(Table(["step", "val loss"], rows, align_right={0, 1},
                            note=f"Validation curve ({len(curve)} evaluations"
                                 + (f", first {max_rows} shown)" if len(curve) > max_rows else ")")))  # fmt: skip
    return (blocks + startup_blocks(load_json(reports / "train_startup.json"))
            + precision_blocks(load_json(reports / "train_precision.json")) + stage_plots(reports, "train"))  # fmt: skip


def precision_blocks(s: dict[str, Any] | None) -> list[Block]:
    """scripts/train_precision.py's run (outside the graph): bf16 autocast against fp32 on this CPU."""
    if not s or "_error" in s or not s.get("runs"):
        return []
    cpu = s.get("cpu") or {}
    rows = [[prec, num(r.get("tokens_per_s"), ",.1f"), num(r.get("best_val_loss"), ".4f"), num(r.get("wall_s"), ",.0f")]
            for prec, r in s["runs"].items()]  # fmt: skip
    native = "native bf16" if s.get("native_bf16") else "no native bf16 (emulated)"
    return [Table(["train.precision", "useful tokens/s", "best val loss", "wall s"], rows, align_right={1, 2, 3},
                  note=f"bf16 autocast vs fp32 (reports/train_precision.json; {cpu.get('model', '?')}, {native}): "
                       f"{num(s.get('speedup'))}x tokens/s, val loss {100 * (s.get('val_loss_rel_diff') or 0):+.2f}%")]  # fmt: skip


def startup_blocks(s: dict[str, Any] | None) -> list[Block]:
    """scripts/train_startup.py's figures (made outside the graph): start-up before/after, 1 vs 2 processes."""
    if not s or "_error" in s or not s.get("launch_to_first_step"):
        return []
    rows = [[case.replace("_", " "), num(v.get("before_s"), ",.1f"), num(v.get("after_s"), ",.1f"), f"{num(v.get('speedup'))}x"]
            for case, v in s["launch_to_first_step"].items()]  # fmt: skip
    cpu = (s.get("cpu") or {}).get("model", "CPU not recorded")
    blocks: list[Block] = [Table(["launch to first optimizer step", "before s", "after s", "speed-up"], rows,
                                 align_right={1, 2, 3}, note=f"Training start-up (reports/train_startup.json; {cpu})")]  # fmt: skip
    procs = s.get("processes") or {}
    if procs.get("ratio_2_over_1") is not None:
        blocks.append(Para(
            f"Two processes (gloo, tiny model, same global batch) against one: {num(procs['ratio_2_over_1'])}x the "
            f"useful tokens/s, largest loss difference over the first steps {num(procs.get('max_loss_difference'), '.2g')}; "
            "a check that `train.num_processes` works, not a speed claim on 2 shared cores."
        ))  # fmt: skip
    return blocks


@json_section("sweep", "Hyperparameter sweep", "sweep.json", "make sweep")
def section_sweep(s: dict[str, Any], reports: Path, max_rows: int) -> list[Block]:
    blocks: list[Block] = details_para(reports, ["sweep.md"])
    trials = next((s[k] for k in ("trials", "runs", "experiments") if isinstance(s.get(k), list)), [])
    best = s.get("best")
    if isinstance(best, dict):
        blocks.append(
            Para([Strong("Best:"), " " + ", ".join(f"{k} = {_scalar(v)}" for k, v in _flat(best).items())])
        )
    if trials:
        flat = [_flat(x) for x in trials if isinstance(x, dict)]
        cols = [c for c in dict.fromkeys(k for f in flat for k in f)][:10]
        blocks.append(
            Table(
                cols,
                [[_scalar(f.get(c)) for c in cols] for f in flat[:max_rows]],
                note=f"{len(flat)} trials" + (f", first {max_rows} shown" if len(flat) > max_rows else ""),
            )
        )
    return blocks + stage_plots(reports, "sweep")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def _scalar(v: Any) -> str:
    return (
        num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else ("–" if v is None else str(v))
    )


EVAL_METRICS = ("perplexity", "bleu", "rouge1", "rouge2", "rougeL", "intent_accuracy")


@json_section("eval", "Evaluation", "eval.json", "evaluate")
def section_eval(e: dict[str, Any], reports: Path, max_rows: int) -> list[Block]:
    blocks: list[Block] = details_para(reports, ["eval.md"])
    base, ft, delta = e.get("base") or {}, e.get("finetuned") or {}, e.get("delta") or {}
    rows = [[m, num(base.get(m)), num(ft.get(m)), num(delta.get(m), "+,.4g") if m in delta else "–"]
            for m in EVAL_METRICS if m in base or m in ft]  # fmt: skip
    blocks.append(Table(["metric", "base", "fine-tuned", "delta"], rows, align_right={1, 2, 3}))
    sample = e.get("sample") or {}
    if sample:
        blocks.append(
            Para(
                f"{num(sample.get('rows'))} test rows, {num(sample.get('intents'))} intents, "
                f"max {num(sample.get('max_new_tokens'))} new tokens; {sample.get('turn', '')}."
            )
        )
    return blocks + stage_plots(reports, "eval")


@reports_section("human", "Human evaluation", "human_eval_sheet.csv", "evaluate")
def section_human(reports: Path, max_rows: int) -> list[Block] | None:
    h = load_json(reports / "human_eval.json")
    sheet = links(reports, ["human_eval_sheet.csv", "human_eval_sheet.html"])
    if h is None and not sheet:
        return None
    blocks: list[Block] = []
    if sheet:
        blocks.append(Para(["Blind A/B sheet for raters: ", *sheet,
                            " (score with ", Code("supportlm human-eval score"), ")."]))  # fmt: skip
    if h is None:
        blocks.append(Para("No filled sheets scored yet (reports/human_eval.json is missing)."))
    elif "_error" in h:
        blocks.append(Para(h["_error"]))
    else:
        ci = h.get("win_rate_ci95") or [None, None]
        blocks.append(Table(["system", "wins", "losses", "ties", "win rate", "95% CI", "raters"], [[
            str(h.get("system", "finetuned")), num(h.get("wins")), num(h.get("losses")), num(h.get("ties")),
            pct(h.get("win_rate")), f"{pct(ci[0])} – {pct(ci[1])}" if ci[0] is not None else "–",
            num(len(h["raters"]) if isinstance(h.get("raters"), list) else h.get("raters")),
        ]], align_right={1, 2, 3, 4}))  # fmt: skip
    return blocks


@json_section("quant", "Quantization", "quantization.json", "quantize")
def section_quant(q: dict[str, Any], reports: Path, max_rows: int) -> list[Block]:
    blocks: list[Block] = details_para(reports, ["quantization.md"])
    served = q.get("served") or {}
    if served:
        blocks.append(Para(["Served: ", Code(str(served.get("name"))), f" (rule: {served.get('rule')})."]))
    rows = []
    for v in (q.get("variants") or [])[:max_rows]:
        ci = v.get("rougeL_delta_ci")
        rows.append([v.get("name", "?"), num(v.get("rows")), num((v.get("size_bytes") or 0) / 1e6, ",.1f"),
                     pct(v.get("reduction_vs_f16")), num(v.get("perplexity")), num(v.get("rougeL")),
                     f"{v.get('rougeL_delta_vs_f16_points', 0):+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "–",
                     num(v.get("kl_divergence"), ".4f"), num(v.get("tokens_per_s"), ",.1f")])  # fmt: skip
    blocks.append(Table(["variant", "rows", "size MB", "reduction vs f16", "perplexity", "ROUGE-L",
                         "Δ ROUGE-L vs f16 (pts, 95%)", "mean KLD vs f16", "tokens/s"], rows,
                        align_right={1, 2, 3, 4, 5, 6, 7, 8}))  # fmt: skip
    skipped = q.get("skipped") or []
    if skipped:
        blocks.append(Para("Skipped: " + "; ".join(f"{s.get('name')}: {s.get('reason')}" for s in skipped)))
    return blocks + stage_plots(reports, "quantize")


@json_section("bench", "Serving benchmark", "bench.json", "bench")
def section_bench(b: dict[str, Any], reports: Path, max_rows: int) -> list[Block]:
    blocks: list[Block] = details_para(reports, ["bench.md"])
    hw = b.get("hardware") or {}
    if hw:
        blocks.append(
            Para(
                f"{hw.get('cores')} CPU cores ({hw.get('cpu')}), GPU: {hw.get('gpu') or 'none'}; "
                f"llama.cpp threads {hw.get('llama_threads')}, {hw.get('llama_parallel')} parallel "
                f"slots; model {b.get('primary')} ({b.get('model_source', '')})."
            )
        )
    rows = []
    for r in (b.get("runs") or [])[: max_rows * 2]:
        rows.append([r.get("model"), r.get("target"), num(r.get("concurrency")), num(r.get("rps"), ",.2f"),
                     num(r.get("tokens_per_s"), ",.1f"), num(r.get("p50_ms"), ",.0f"), num(r.get("p95_ms"), ",.0f"),
                     num(r.get("ttft_ms"), ",.0f"), num(r.get("ms_per_100_tokens"), ",.0f"),
                     pct(r.get("error_rate"))])  # fmt: skip
    blocks.append(Table(["model", "target", "users", "req/s", "tokens/s", "p50 ms", "p95 ms", "TTFT ms",
                         "ms/100 tokens", "errors"], rows, align_right=set(range(2, 10))))  # fmt: skip
    return blocks + stage_plots(reports, "bench")


@json_section("containers", "Containers", "containers.json", "make containers-report")
def section_containers(c: dict[str, Any], reports: Path, max_rows: int) -> list[Block]:
    blocks: list[Block] = []
    images = [i for i in c.get("images", []) if isinstance(i, dict)]
    if images:
        blocks.append(Table(["image", "base", "size (MB)", "build cold (s)", "build warm (s)"],
                            [[i.get("name", "?"), i.get("base", "?"), num((i.get("size_bytes") or 0) / 1e6, ",.0f"),
                              num(i.get("build_cold_s")), num(i.get("build_warm_s"))] for i in images],
                            align_right={2, 3, 4},
                            note="make docker-build-<name>; cold = BuildKit cache pruned first (the base image kept)"))  # fmt: skip
    d, h = c.get("docker_smoke_s"), c.get("host_smoke_s")
    if isinstance(d, (int, float)) and isinstance(h, (int, float)) and h > 0:
        text = (
            f" make all DOCKER=1 PROFILE=smoke {num(d)} s, the same on the host {num(h)} s: "
            f"containers/host = {d / h:.2f}x (one run each, same machine)."
        )
        blocks.append(Para([Strong("Smoke pipeline:"), text]))
    cmp_ = c.get("comparison") or {}
    data = cmp_.get("data_stages") or {}
    if data:
        same = [k for k, v in data.items() if v.get("equal")]
        blocks.append(
            Para(
                f"Data outputs byte-equal to the host run: {len(same)}/{len(data)} stages ({', '.join(same)})."
            )
        )
    metrics = cmp_.get("metrics") or []
    if metrics:
        blocks.append(Table(["metric", "host", "containers", "abs. difference", "tolerance", "within"],
                            [[f"{m['file']}: {m['key']}", num(m.get("host")), num(m.get("containers")),
                              num(m.get("abs_diff"), ".2g"), num(m.get("tolerance")), num(m.get("within"))]
                             for m in metrics], align_right={1, 2, 3, 4}))  # fmt: skip
    if isinstance(c.get("compose_ready_s"), (int, float)):
        blocks.append(
            Para(
                f"Compose stack (cpu profile: gateway, engine, Prometheus) ready in {num(c['compose_ready_s'])} s."
            )
        )
    cpu = c.get("cpu") or {}
    if cpu:
        blocks.append(Para(f"Machine: {cpu.get('model', '?')}, {cpu.get('cores', '?')} cores, "
                           f"{', '.join(cpu.get('isa', [])) or 'ISA unknown'}."))  # fmt: skip
    return blocks


@json_section("fairness", "Fairness between API keys", "fairness.json", "fairness")
def section_fairness(f: dict[str, Any], reports: Path, max_rows: int) -> list[Block]:
    load, lim, hw = f.get("load") or {}, f.get("limits") or {}, f.get("hardware") or {}
    blocks: list[Block] = [
        Para(
            f"One abusive key ({load.get('abuser_clients')} connections at full speed, {load.get('abuser_max_tokens')}-token "
            f"requests) and one polite key ({load.get('polite_rps')} request/s, {load.get('polite_max_tokens')} tokens) "
            f"through the gateway and llama-server; per-key limits under test: per_key_concurrency="
            f"{lim.get('per_key_concurrency')}, fair_window_s={lim.get('fair_window_s')}, "
            f"max_concurrency={lim.get('max_concurrency')}. CPU: {hw.get('cpu', '?')}, {hw.get('cores', '?')} cores."
        )
    ]
    rows = []
    for phase, data in (f.get("phases") or {}).items():
        for who in ("polite", "abuser"):
            d = data.get(who) if isinstance(data, dict) else None
            if isinstance(d, dict):
                statuses = ", ".join(f"{k}: {v}" for k, v in (d.get("statuses") or {}).items())
                rows.append([phase, who, num(d.get("requests")), statuses, num(d.get("p50_ms")), num(d.get("p95_ms")),
                             num(d.get("tokens_per_s"))])  # fmt: skip
    if rows:
        blocks.append(Table(["phase", "key", "requests", "statuses", "p50 ms", "p95 ms", "tokens/s"], rows[:max_rows],
                            align_right={2, 4, 5, 6},
                            note="unfair = the same gateway without per-key caps or token budget (the old one)"))  # fmt: skip
    blocks += stage_plots(reports, "fairness")
    return blocks + details_para(reports, ["fairness.md"])


SECTIONS = (section_data, section_train, section_sweep, section_eval, section_human, section_quant, section_bench,
            section_fairness, section_containers)  # fmt: skip


# ---------------------------------------------------------------- lineage


def lineage_section(reports: Path, root: Path) -> Section:
    from supportlm.lineage import dvc_hashes, git_sha

    blocks: list[Block] = [Para(["Code: git ", Code(git_sha(root)), "."])]
    lock = root / "dvc.lock"
    if lock.is_file():
        import yaml

        stages = list((yaml.safe_load(lock.read_text()) or {}).get("stages", {}))
        hashes = dvc_hashes(stages, root)
        data_outs = {k: v for k, v in hashes.items() if k.startswith(("data/", "models/"))}
        if data_outs:
            blocks.append(
                Table(
                    ["DVC out (data / models)", "md5 (dvc.lock)"],
                    [[Code(k), Code(v)] for k, v in sorted(data_outs.items())],
                )
            )
    else:
        blocks.append(Para(["No dvc.lock yet (run ", Code("dvc repro"), ")."]))
    hashes = []
    for f in sorted(reports.glob("*.json")):
        d = load_json(f) or {}
        if d.get("params_hash"):
            hashes.append([f.name, Code(str(d["params_hash"])), str(d.get("base_model") or "–")])
    if hashes:
        blocks.append(Table(["report", "params hash", "base model"], hashes))
    params = root / "params.yaml"
    if params.is_file():
        blocks.append(Details("params.yaml", params.read_text(encoding="utf-8")))
    return Section("lineage", "Lineage", blocks)
