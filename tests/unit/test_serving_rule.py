"""The quantize stage's serving rule (supportlm.quantize.select), its published files and who reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supportlm.bench.inputs import resolve_primary, served_variant
from supportlm.config import BenchParams
from supportlm.errors import DataError
from supportlm.quantize import select
from supportlm.quantize.llama_tools import parse_kld


def _row(name: str, low: float, tps: float | None, kld: float | None, size: int) -> dict:
    return {"name": name, "file": f"models/gguf/model-{name}.gguf", "size_bytes": size, "tokens_per_s": tps,
            "rougeL_vs_f16": {"low": low}, **({"kld": {"mean_kld": kld}} if kld is not None else {})}  # fmt: skip


ROWS = [
    {"name": "fp32", "size_bytes": 500, "tokens_per_s": 20.0, "rougeL_vs_f16": {"low": 5.0}},  # HF: never a candidate
    _row("f16", 0.0, 50.0, None, 270),
    _row("q8_0", -1.1, 78.0, 0.002, 145),
    _row("q4_k_m", -2.9, 90.0, 0.06, 105),  # faster, but a 2.9-point drop is not ruled out
    _row("q4_k_m-imat", -1.8, 89.0, 0.04, 105),
    _row("q4_0-imat", -1.9, 92.0, 0.05, 92),
]


def test_the_fastest_eligible_variant_wins_and_near_ties_go_to_the_lower_kl_divergence():
    choice = select.choose(ROWS, drop_target=2.0, speed_tie=0.05)
    # eligible: f16, q8_0, q4_k_m-imat, q4_0-imat; fastest 92; within 5%: both -imat (89 >= 87.4) -> lower KLD
    assert choice["variant"] == "q4_k_m-imat"
    verdicts = {c["variant"]: c for c in choice["candidates"]}
    assert set(verdicts) == {"f16", "q8_0", "q4_k_m", "q4_k_m-imat", "q4_0-imat"}
    assert not verdicts["q4_k_m"]["eligible"] and "-2.90" in verdicts["q4_k_m"]["why_not"]
    assert verdicts["f16"]["eligible"] and verdicts["f16"]["mean_kld"] == 0.0
    assert "-2 points" in choice["rule"] and "5%" in choice["rule"]


def test_without_a_tie_speed_decides_and_a_stricter_gate_changes_the_choice():
    assert select.choose(ROWS, drop_target=2.0, speed_tie=0.0)["variant"] == "q4_0-imat"
    assert select.choose(ROWS, drop_target=1.5, speed_tie=0.05)["variant"] == "q8_0"
    assert select.choose(ROWS, drop_target=0.5, speed_tie=0.05)["variant"] == "f16"  # only the reference is left
    assert select.choose(ROWS, drop_target=5.0, speed_tie=0.0)["variant"] == "q4_0-imat"


def test_no_f16_row_is_refused():
    with pytest.raises(ValueError, match="f16"):
        select.choose([r for r in ROWS if r["name"] != "f16"], 2.0, 0.05)


def test_publish_links_the_chosen_file_and_the_bench_reads_the_choice(tmp_path: Path):
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    for name in ("f16", "q8_0"):
        (gguf / f"model-{name}.gguf").write_bytes(name.encode() * 100)
    assert served_variant(gguf) is None
    assert resolve_primary(BenchParams(primary="served"), gguf).primary == "q4_k_m"  # no quantize outputs yet
    info = select.publish(gguf, {"variant": "q8_0", "rule": "r", "candidates": []}, gguf / "model-q8_0.gguf")
    assert (gguf / "model-served.gguf").read_bytes() == (gguf / "model-q8_0.gguf").read_bytes()
    assert info["file"] == "model-q8_0.gguf"
    assert json.loads((gguf / "served.json").read_text())["variant"] == "q8_0"
    assert resolve_primary(BenchParams(primary="served"), gguf).primary == "q8_0"
    assert resolve_primary(BenchParams(primary="f16"), gguf).primary == "f16"  # a name is kept as given
    # a second choice replaces both files (not appends, not a dangling link)
    select.publish(gguf, {"variant": "f16", "rule": "r", "candidates": []}, gguf / "model-f16.gguf")
    assert (gguf / "model-served.gguf").read_bytes() == b"f16" * 100 and served_variant(gguf) == "f16"
    assert sorted(p.name for p in gguf.iterdir()) == ["model-f16.gguf", "model-q8_0.gguf", "model-served.gguf",
                                                      "served.json"]  # fmt: skip
    (gguf / "model-f16.gguf").unlink()
    with pytest.raises(DataError, match="model-f16.gguf is missing"):
        served_variant(gguf)


def test_the_serving_defaults_name_the_rules_file():
    from supportlm.config import ServeParams

    assert BenchParams().primary == "served"
    assert ServeParams().model.path == Path("models/gguf/model-served.gguf")
    compose = (Path(__file__).resolve().parents[2] / "docker" / "compose.yaml").read_text()
    image = (Path(__file__).resolve().parents[2] / "docker" / "Dockerfile.serve").read_text()
    assert "${SUPPORTLM_GGUF:-model-served.gguf}" in compose and "SUPPORTLM_MODEL_PATH=/models/model-served.gguf" in image


KLD_OUTPUT = """
====== Perplexity statistics ======
Mean PPL(Q)                   :   7.123456 ±   0.101010
Mean PPL(base)                :   6.900000 ±   0.100000
Cor(ln(PPL(Q)), ln(PPL(base))):  99.12%
Mean ln(PPL(Q)/PPL(base))     :   0.031872 ±   0.002000
Mean PPL(Q)/PPL(base)         :   1.032385 ±   0.002065
Mean PPL(Q)-PPL(base)         :   0.223456 ±   0.014000

====== KL divergence statistics ======
Mean    KLD:   0.041234 ±   0.000812
Maximum KLD:   3.210000
99.9%   KLD:   1.500000
99.0%   KLD:   0.450000
95.0%   KLD:   0.160000
Median  KLD:   0.018000

====== Token probability statistics ======
Same top p:  91.234 ± 0.512 %
"""


def test_llama_perplexity_summary_is_parsed_and_a_missing_line_is_named():
    k = parse_kld(KLD_OUTPUT)
    assert k["mean_kld"] == pytest.approx(0.041234) and k["mean_kld_unc"] == pytest.approx(0.000812)
    assert k["median_kld"] == pytest.approx(0.018) and k["p99_kld"] == pytest.approx(0.45)
    assert k["same_top_p"] == pytest.approx(0.91234) and k["ppl_ratio"] == pytest.approx(1.032385)
    with pytest.raises(DataError, match="same_top_p"):
        parse_kld(KLD_OUTPUT.replace("Same top p", "Other"))


def test_quantize_params_refuse_what_the_tools_cannot_do():
    from pydantic import ValidationError

    from supportlm.config import QuantizeParams

    with pytest.raises(ValidationError, match="no KL-divergence statistics under 100"):
        QuantizeParams(kld={"chunks": 2, "ctx": 64})
    with pytest.raises(ValidationError, match="reference_rows .* must be <= quantize.eval_rows"):
        QuantizeParams(eval_rows=16, reference_rows=32)


def test_lookup_decoding_drafts_from_the_cache_beside_the_model(tmp_path: Path):
    from supportlm.serve.server import lookup_args

    model = tmp_path / "model-served.gguf"
    model.write_bytes(b"x")
    assert lookup_args(False, model) == []
    assert lookup_args(True, model) == []  # no cache there (the bundled fallback): served without drafts
    (tmp_path / "lookup-static.bin").write_bytes(b"c")
    assert lookup_args(True, model) == ["--spec-type", "ngram-cache", "--lookup-cache-static",
                                        str(tmp_path / "lookup-static.bin")]  # fmt: skip
