"""Bench: the served model under load, through the gateway and straight at the engine, on this machine.

    dvc repro bench
    python stages/bench.py                 # same code, outside DVC
    supportlm bench                        # the same runner, from the CLI

Steps (`run_bench`):

1. variants: models/gguf/model-<name>.gguf from the quantize stage (`bench.primary` + `bench.variants`);
   without them (`bench.fallback_bundled`) the bundled SmolLM2 Q4_1 GGUF and llama-quantize'd copies of
   it (cached under ~/.cache/supportlm/bench-fallback; sizes and speeds are real, quality is not);
2. prompts: a seeded sample of data/formatted/test.jsonl, each conversation cut before its last
   assistant turn (system + user [+ earlier turns]);
3. memory read bandwidth (numpy, 1..threads threads) and single-stream decode per variant (llama-bench tg), so every
   variant gets its bandwidth-bound ceiling and the fraction reached (`bandwidth.py`);
4. engine tuning matrix (`engine_tuning.py`, bench.tuning.enabled): what each knob buys;
5. the serving stack exactly as `supportlm serve` runs it (serve(): llama-server with `parallel`
   slots + the gateway, both on 127.0.0.1, a generated API key; rate limits lifted for the load
   generator), warmed up; then headless Locust (`locustfile.py`: streaming + non-streaming users) at
   each `bench.concurrency` level against the gateway and each `bench.engine_concurrency` level against
   llama-server's own OpenAI endpoint. Both targets at a level get the same prompts in the same order
   from empty slot caches (slots erased, llama-server's RAM prompt cache off), greedy decoding: the
   engine does the same work for both; then fixed work (`fixed_load.py`, bench.fixed): the same prompts
   and exactly max_new_tokens per reply (ignore_eos), engine and gateway in interleaved round pairs at each
   bench.fixed level, with CPU-seconds per process and a py-spy profile of the gateway; optionally
   (`bench.overhead_pairs`) Locust prompts one at a time, engine then gateway;
6. each other variant through the gateway at `bench.variant_concurrency`;
7. targets (seed: < 500 ms per 100 tokens, > 10 req/s, > 50% size reduction; CPU: gateway overhead,
   gateway/engine tokens/s under fixed work,
   batching speedup, fraction of the bandwidth bound), each {name, goal, measured, met}.

Writes reports/bench.json (`runs`, `targets`, `hardware`, `overall`, `bandwidth`, `tuning`, lineage),
reports/bench.md and reports/plots/bench/*.png. Raw Locust output stays in a temp dir (deleted).

Raises:
    DataError: no test split (run `dvc repro format`), or no GGUF and bench.fallback_bundled is false.
    SupportLMError subclasses from the serve stack (engine did not start) and the tuning matrix.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from supportlm.bench.console import say
from supportlm.bench.inputs import build_prompts, resolve_primary, resolve_variants
from supportlm.bench.locust import parse_locust_stats, run_locust
from supportlm.bench.report import plot, render_markdown
from supportlm.bench.stack import (
    Stack,
    bench_settings,
    engine_model,
    erase_slots,
    paired_overhead,
    serving_stack,
    warm_up,
)
from supportlm.bench.targets import build_targets, hardware_info, size_reduction_info
from supportlm.config import Params
from supportlm.paths import LOOKUP_CACHE, Paths
from supportlm.render import fmt

log = logging.getLogger("supportlm.bench")


def run_bench(params: Params, paths: Paths) -> dict[str, Any]:
    """The bench stage: reads params.bench, params.serve and params.base_model.base (for lineage).

    Returns the bench.json dict (also written, with bench.md and the plots)."""
    from supportlm.bench import bandwidth as bw
    from supportlm.bench import engine_tuning as et
    from supportlm.bench import fixed_load as fl
    from supportlm.io import write_json
    from supportlm.lineage import git_sha, params_hash
    from supportlm.serve.settings import default_threads

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    p, serve_p, base_model = params.bench, params.serve, params.base_model.base
    root, reports, gguf_dir = paths.root, paths.reports, paths.gguf
    primary_param = p.primary
    p = resolve_primary(p, gguf_dir)  # `served`: the variant the quantize stage's rule chose
    test_jsonl = paths.formatted / "test.jsonl"

    threads = p.threads or serve_p.llama.threads or default_threads()
    # serve.engine.url set (TGI / vLLM / an OpenAI-compatible server, e.g. PROFILE=gpu): bench that engine
    # behind the gateway; the GGUF-only parts (llama-bench decode, tuning, variants) do not apply
    external = serve_p.engine.url is not None
    if external:
        variants, source = {}, f"external {serve_p.engine.kind} engine at {serve_p.engine.url}"
        label = serve_p.engine.kind
    else:
        variants, source = resolve_variants(p, gguf_dir)
        label = p.primary
    prompts = build_prompts(test_jsonl, p.prompts, p.seed)
    say(
        f"{len(prompts)} prompts; variants: "
        + ", ".join(f"{v.name} {v.size_bytes / 1e6:,.1f} MB" for v in variants.values())
        + f" ({source}); threads {threads}"
    )

    # 1. bandwidth + single-stream decode per variant
    band = bw.read_bandwidth(p.bandwidth_mb, p.bandwidth_repeats, threads=threads)
    band["copy"] = bw.copy_bandwidth(p.bandwidth_mb, p.bandwidth_repeats)  # reference only (not the bound)
    say(
        f"read bandwidth {band['gb_s']:.1f} GB/s ({band['threads']} thread(s)); "
        f"copy {band['copy']['gb_s']:.1f} GB/s (read+write, 1 thread)"
    )
    decode: dict[str, dict[str, Any]] = {}
    for name, v in variants.items():
        decode[name] = et.llama_bench(
            v.path, threads=threads, n_gen=p.decode_tokens, repeats=p.decode_repeats
        )
        say(
            f"decode {name}: {decode[name]['tokens_per_s']:.1f} tok/s (llama-bench tg{p.decode_tokens}, "
            f"{threads} thread(s))"
        )
    bound_rows = bw.bound_table(
        band["gb_s"],
        {n: v.size_bytes for n, v in variants.items()},
        {n: d["tokens_per_s"] for n, d in decode.items()},
    )

    with tempfile.TemporaryDirectory(prefix="supportlm-bench-") as tmp:
        work = Path(tmp)
        # 2. tuning matrix
        tuning = None
        if p.tuning.enabled and not external:
            say("engine tuning matrix")
            tuning = et.run_tuning(
                {n: v.path for n, v in variants.items()}, p.primary, prompts, p.tuning, threads=threads,
                parallel=serve_p.llama.parallel, ctx_size=serve_p.llama.ctx_size, max_tokens=p.max_new_tokens,
                decode_tokens=p.decode_tokens, decode_repeats=p.decode_repeats, decode=decode, log_dir=work,
                log=say, lookup_cache=lookup if (lookup := gguf_dir / LOOKUP_CACHE).is_file() else None,
            )  # fmt: skip

        # 3. Locust: primary over every level, gateway and engine
        prompts_file = work / "prompts.jsonl"
        prompts_file.write_text(
            "".join(json.dumps({"messages": m}) + "\n" for m in prompts), encoding="utf-8"
        )
        runs: list[dict[str, Any]] = []
        max_level = max([*p.concurrency, *p.engine_concurrency, *p.variant_concurrency])
        stack_info: dict[str, Any] = {}
        overhead: dict[str, Any] | None = None
        fixed: dict[str, Any] | None = None

        def measure(stack: Stack, model: str, target: str, c: int, seconds: float) -> None:
            url = stack.gateway_url if target == "gateway" else stack.engine_url
            env = {
                "SUPPORTLM_BENCH_PROMPTS": str(prompts_file),
                "SUPPORTLM_BENCH_API_KEY": stack.api_key if target == "gateway" else "",
                "SUPPORTLM_BENCH_MAX_TOKENS": str(p.max_new_tokens),
                "SUPPORTLM_BENCH_TEMPERATURE": str(p.temperature),
                "SUPPORTLM_BENCH_MODEL": engine_model(stack) if target == "engine" else stack.served_name,
            }
            erase_slots(stack.engine_url, stack.parallel)
            entries, wall = run_locust(url, c, seconds, env=env, out_dir=work, label=f"{model}-{target}-c{c}",
                                       stop_timeout_s=p.stop_timeout_s)  # fmt: skip
            run = parse_locust_stats(entries, target=target, model=model, concurrency=c)
            run["wall_s"] = round(wall, 1)
            runs.append(run)
            say(
                f"{model:7s} {target:7s} c={c:<3d} {run['requests']:4d} req  {run['rps']:6.2f} req/s "
                f"{run['tokens_per_s']:7.1f} tok/s  p50 {fmt(run['p50_ms'], '7.0f')} ms  p95 "
                f"{fmt(run['p95_ms'], '7.0f')} ms  ttft {fmt(run['ttft_ms'], '6.0f')} ms  "
                f"{fmt(run['ms_per_100_tokens'], '6.0f')} ms/100tok  err {run['error_rate']:.1%}"
            )

        settings = bench_settings(
            serve_p,
            None if external else variants[p.primary].path,
            threads=threads,
            slot_dir=work / "slots",
            max_level=max_level,
        )
        (work / "slots").mkdir()
        with serving_stack(settings, work) as stack:
            llama, limits = stack.settings.llama, stack.settings.limits
            stack_info = {"llama_threads": llama.threads, "llama_parallel": llama.parallel,
                          "llama_ctx_size": llama.ctx_size, "llama_batch_size": llama.batch_size,
                          "llama_ubatch_size": llama.ubatch_size, "llama_extra_args": llama.extra_args,
                          "limits_max_concurrency": limits.max_concurrency,
                          "limits_max_queue": limits.max_queue,
                          "event_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"}  # fmt: skip
            warm_up(stack, prompts, p.warmup_requests, p.max_new_tokens)
            levels = sorted(set(p.concurrency) | set(p.engine_concurrency))
            for i, c in enumerate(levels):
                order = (
                    ("gateway", "engine") if i % 2 == 0 else ("engine", "gateway")
                )  # no fixed first-mover edge
                for target in order:
                    if c in (p.concurrency if target == "gateway" else p.engine_concurrency):
                        measure(stack, label, target, c, p.level_seconds)
            if p.fixed.enabled and not external:
                say("fixed work: the same prompts and reply lengths through the gateway and at the engine")
                fixed = fl.fixed_load(stack, prompts[: p.fixed.prompts], levels=p.fixed.levels,
                                      pairs=p.fixed.pairs, per_user=p.fixed.requests_per_user,
                                      max_tokens=p.max_new_tokens, log=say)  # fmt: skip
                if p.fixed.profile:
                    fixed["profile"] = fl.profile_gateway(
                        stack, prompts[: p.fixed.prompts], users=max(p.fixed.levels),
                        per_user=p.fixed.requests_per_user, max_tokens=p.max_new_tokens, rate=p.fixed.profile_rate_hz,
                    )  # fmt: skip
                    say(fl.describe_profile(fixed["profile"]))
            elif p.fixed.enabled:
                fixed = {"skipped": f"an external engine ({serve_p.engine.kind}) may not honour ignore_eos"}
            if p.overhead_pairs:
                overhead = paired_overhead(stack, prompts, p.overhead_pairs, p.max_new_tokens)
                say(
                    f"gateway overhead, {overhead['pairs']} interleaved pairs: "
                    + (f"{overhead['overhead']:+.1%}" if overhead["overhead"] is not None else "n/a")
                    + f" (gateway {overhead['gateway_median_ms']} ms vs engine {overhead['engine_median_ms']} ms)"
                )

        # 4. other variants through the gateway
        for name in [] if external else [v for v in p.variants if v != p.primary]:
            if name not in variants:
                say(f"variant {name}: no GGUF; skipped")
                continue
            vs = bench_settings(
                serve_p, variants[name].path, threads=threads, slot_dir=work / "slots", max_level=max_level
            )
            vwork = work / name
            vwork.mkdir()
            with serving_stack(vs, vwork) as stack:
                warm_up(stack, prompts, max(1, p.warmup_requests // 2), p.max_new_tokens)
                for c in p.variant_concurrency:
                    measure(stack, name, "gateway", c, p.variant_seconds)

    size_red = size_reduction_info(reports, variants, p.primary)
    targets = build_targets(
        runs,
        label,
        p.targets,
        size_reduction=size_red,
        bandwidth_rows=bound_rows,
        size_name=p.primary,
        overhead=overhead,
        fixed=fixed,
    )
    gw = {r["concurrency"]: r for r in runs if r["target"] == "gateway" and r["model"] == label}
    t_by = {t["name"]: t["measured"] for t in targets}
    f1 = ((fixed or {}).get("levels") or {}).get("1", {}).get("gateway", {})
    result: dict[str, Any] = {
        "runs": runs,
        "targets": targets,
        "hardware": hardware_info(threads, serve_p.llama.parallel, load_before),
        "overall": {
            # exactly max_new_tokens per reply (bench.fixed) when measured; else Locust's replies of any length
            "ms_per_100_tokens_c1": f1.get("ms_per_100_tokens_p50") or (gw[1]["ms_per_100_tokens"] if 1 in gw else None),
            "ms_per_100_tokens_c1_locust": gw[1]["ms_per_100_tokens"] if 1 in gw else None,
            "gateway_engine_tokens_ratio": next((v for k, v in t_by.items() if k.startswith("gateway/engine")), None),
            "p50_ms_c1": gw[1]["p50_ms"] if 1 in gw else None,
            "ttft_ms_c1": gw[1]["ttft_ms"] if 1 in gw else None,
            "max_rps": max((r["rps"] for r in gw.values()), default=None),
            "max_tokens_per_s": max((r["tokens_per_s"] for r in gw.values()), default=None),
            "gateway_overhead": next((v for k, v in t_by.items() if k.startswith("gateway overhead")), None),
            "batch_speedup_c8": next((v for k, v in t_by.items() if k.startswith("batched")), None),
            "decode_tokens_per_s": decode.get(label, {}).get("tokens_per_s"),
            "bandwidth_gb_s": band["gb_s"],
            "bandwidth_fraction": next((v for k, v in t_by.items() if k.startswith("single-stream")), None),
            "error_rate_max": max((r["error_rate"] for r in runs), default=None),
            "targets_met": sum(t["met"] for t in targets),
            "targets_total": len(targets),
        },
        "gateway_overhead": overhead,
        "fixed": fixed,
        "bandwidth": {**band, "models": bound_rows},
        "decode": {n: d for n, d in decode.items()},
        "tuning": tuning,
        "models": {
            n: {"path": str(v.path), "size_bytes": v.size_bytes, "source": v.source}
            for n, v in variants.items()
        },
        "model_source": source,
        "primary": label,
        "primary_from": "the quantize stage's serving rule (models/gguf/served.json)"
        if primary_param == "served" and not external else "bench.primary",
        "engine": {"kind": serve_p.engine.kind, "url": serve_p.engine.url, "managed": not external},
        "serving": stack_info,
        "setup": {
            "concurrency": p.concurrency,
            "engine_concurrency": p.engine_concurrency,
            "variant_concurrency": p.variant_concurrency,
            "level_seconds": p.level_seconds,
            "variant_seconds": p.variant_seconds,
            "max_new_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "prompts": len(prompts),
            "fixed": p.fixed.model_dump(mode="json"),
            "gateway_throughput_ratio_goal": p.targets.gateway_throughput_ratio,
            "test_file": str(test_jsonl),
            "users": "1 user: AlternatingUser (stream/plain in turn); more: half StreamingUser, half NonStreamingUser",
        },
        "params_hash": params_hash(
            {"bench": p.model_dump(mode="json"), "serve": serve_p.model_dump(mode="json")}
        ),
        "base_model": base_model,
        "git_sha": git_sha(root),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    result["plots"] = [str(x) for x in plot(result, Path(paths.plots) / "bench")]
    write_json(reports / "bench.json", result)
    (reports / "bench.md").write_text(render_markdown(result, reports), encoding="utf-8")
    say(
        f"wrote {reports / 'bench.json'}, bench.md ({result['seconds']:.0f} s); targets met "
        f"{result['overall']['targets_met']}/{len(targets)}"
    )
    return result
