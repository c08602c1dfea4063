"""Reference metrics and support checks against values computed by hand.

BLEU: "a b c d e" vs "a b c d f": n-gram precisions 4/5, 3/4, 2/3, 1/2, equal lengths (BP = 1), so
BLEU = 100 * (4/5 * 3/4 * 2/3 * 1/2) ** (1/4) = 100 * 0.2 ** 0.25 = 66.874.
ROUGE-1 "the cat sat" vs "the cat ran": 2 of 3 unigrams on each side -> P = R = F = 2/3.
Perplexity of a uniform distribution over V tokens is V.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_utils import tiny_model_dir

from supportlm.evaluate import checks as chk
from supportlm.evaluate import metrics as m
from supportlm.evaluate.inputs import stratified_sample
from supportlm.train.batching import IGNORE_INDEX

# ---------------------------------------------------------------- BLEU / ROUGE


def test_perfect_match_bleu_100_rouge_1():
    refs = ["Your order {{Order Number}} has shipped today.", "Refunds take five business days."]
    scores = m.text_metrics(refs, refs)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["rouge1"] == scores["rouge2"] == scores["rougeL"] == pytest.approx(1.0)


def test_bleu_hand_computed():
    assert m.bleu(["a b c d e"], ["a b c d f"]) == pytest.approx(100 * 0.2**0.25, abs=1e-3)


def test_bleu_no_overlap_is_zero():
    assert m.bleu(["x y z w"], ["a b c d"]) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("hyp", "ref", "r1", "r2", "rl"),
    [
        ("the cat sat", "the cat ran", 2 / 3, 1 / 2, 2 / 3),
        # stemmer on: "orders"/"ordered" -> "order"; LCS "your order ship" of 3 and 4 tokens
        ("your orders shipped", "your ordered ship fast", 6 / 7, 4 / 5, 6 / 7),
        ("completely different words", "nothing shared here", 0.0, 0.0, 0.0),
    ],
)
def test_rouge_hand_computed(hyp, ref, r1, r2, rl):
    s = m.rouge([hyp], [ref])
    assert s["rouge1"] == pytest.approx(r1, abs=1e-6)
    assert s["rouge2"] == pytest.approx(r2, abs=1e-6)
    assert s["rougeL"] == pytest.approx(rl, abs=1e-6)


def test_rouge_is_mean_over_rows():
    s = m.rouge(["the cat sat", "a b"], ["the cat ran", "a b"])
    assert s["rouge1"] == pytest.approx((2 / 3 + 1.0) / 2)


# ---------------------------------------------------------------- perplexity


@pytest.mark.parametrize("vocab", [2, 7, 49152])
def test_uniform_distribution_perplexity_is_vocab_size(vocab):
    logits = torch.zeros(1, 5, vocab)  # (B, T, V) uniform
    labels = torch.tensor([[IGNORE_INDEX, 1, 1, 0, 1]])  # first token is the prompt
    nll, n = m.nll_from_logits(logits, labels)
    assert n == 4
    assert m.perplexity(nll, n) == pytest.approx(vocab, rel=1e-5)


def test_nll_hand_computed_and_masked():
    # vocab 2; position 0 predicts token at 1 with p = 3/4 (logits 0, ln 3); position 1 is masked out
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0], [0.0, 0.0]]])
    labels = torch.tensor([[0, 1, IGNORE_INDEX]])
    nll, n = m.nll_from_logits(logits, labels)
    assert n == 1
    assert nll == pytest.approx(-math.log(3 / 4), rel=1e-6)
    assert m.perplexity(nll, n) == pytest.approx(4 / 3, rel=1e-6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = tiny_model_dir(tmp_path_factory.mktemp("tiny") / "m", seed=3)
    return AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32), AutoTokenizer.from_pretrained(
        str(d)
    )


def _examples() -> list[m.Example]:
    sys_msg = {"role": "system", "content": "You are a helpful support assistant."}
    return [
        m.Example(
            "a",
            "track_order",
            [sys_msg, {"role": "user", "content": "Where is my order?"}],
            "You can track your order under {{Order Tracking}} in your account.",
        ),
        m.Example(
            "b",
            "refund",
            [sys_msg, {"role": "user", "content": "I want a refund for my last purchase."}],
            "Refunds are processed within five business days.",
        ),
        m.Example("c", "refund", [sys_msg, {"role": "user", "content": "Refund?"}], "Yes."),
    ]


def test_reply_nll_matches_transformers_loss(tiny):
    """Batched, right-padded, reply-only scoring == transformers' own loss on each example alone."""
    model, tok = tiny
    examples = _examples()
    got = m.reply_nll_hf(model, tok, examples, batch_size=3)
    for ex, (nll, n) in zip(examples, got, strict=True):
        p, r = m.prompt_ids(tok, ex.prompt), m.reply_ids(tok, ex.reference)
        ids = torch.tensor([p + r])
        labels = torch.tensor([[IGNORE_INDEX] * len(p) + r])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss  # mean over reply tokens
        assert n == len(r)
        assert r[-1] == tok.eos_token_id  # the model is scored on ending the reply too
        assert nll / n == pytest.approx(float(loss), rel=1e-4)


def test_to_example_takes_first_assistant_turn():
    row = {
        "id": "x",
        "intent": "i",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"},
        ],
    }
    ex = m.to_example(row)
    assert [x["content"] for x in ex.prompt] == ["s", "u1"] and ex.reference == "a1"


# ---------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("reply", "reference", "prompt", "expected", "kept", "recall", "invented"),
    [
        (
            "Track it under {{Order Tracking}}.",
            "Use {{Order Tracking}} on {{Website URL}}.",
            "",
            2,
            1,
            0.5,
            0,
        ),
        (
            "Use {{ Order  Tracking }} on {{Website URL}}.",
            "Use {{Order Tracking}} on {{Website URL}}.",
            "",
            2,
            2,
            1.0,
            0,
        ),
        ("Your order 12345 is on its way.", "Order {{Order Number}} is on its way.", "", 1, 0, 0.0, 0),
        (
            "See {{Refund Page}} for {{Order Number}}.",
            "Refunds take 5 days.",
            "my order {{Order Number}}",
            0,
            0,
            None,
            1,
        ),
    ],
)
def test_placeholder_check(reply, reference, prompt, expected, kept, recall, invented):
    r = chk.placeholder_check(reply, reference, prompt)
    assert (r["expected"], r["kept"], r["recall"], r["invented"]) == (expected, kept, recall, invented)


@pytest.mark.parametrize(
    ("text", "n", "rate"),
    [
        ("a b c a b c a b c", 3, 1 - 3 / 7),  # 7 trigrams, 3 distinct
        ("the order the order the order", 2, 1 - 2 / 5),  # 5 bigrams: (the order), (order the)
        ("every word here is new", 3, 0.0),
        ("too short", 3, 0.0),
        ("", 3, 0.0),
    ],
)
def test_repeated_ngram_rate(text, n, rate):
    assert chk.repeated_ngram_rate(text, n) == pytest.approx(rate)


def test_row_checks_and_aggregate():
    ref = "Please use {{Order Tracking}} to follow your parcel today."  # 9 words
    rows = [
        chk.row_checks("Please use {{Order Tracking}} to follow your parcel today.", ref),
        chk.row_checks("   ", ref),
        chk.row_checks("order order order order order order order order", ref),
        chk.row_checks(" ".join(["Please check {{Order Tracking}} and your email for updates"] * 3), ref),
    ]
    assert rows[0]["length_ratio"] == pytest.approx(1.0) and not rows[0]["degenerate"]
    assert rows[1]["empty"] and rows[1]["degenerate"]
    assert rows[2]["degenerate"] and rows[2]["repeated_ngram_rate"] == pytest.approx(5 / 6)
    agg = chk.aggregate(rows)
    assert agg["num_samples"] == 4
    assert agg["placeholder_rows"] == 4 and agg["placeholder_recall"] == pytest.approx(2 / 4)
    assert agg["empty_rate"] == pytest.approx(1 / 4)
    assert agg["degenerate_rate"] == pytest.approx(3 / 4)  # empty, one-word loop, 3x repeated sentence
    assert rows[3]["length_ratio"] == pytest.approx(27 / 9)
    assert rows[3]["repeated_ngram_rate"] == pytest.approx(1 - 9 / 25)  # 25 trigrams, one 9-word cycle
    assert agg["too_short_rate"] == pytest.approx(1 / 4) and agg["too_long_rate"] == pytest.approx(1 / 4)


def test_intent_classifier_learns_intents():
    train = [
        {
            "intent": "refund",
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": f"Your refund {w} is processed."},
            ],
        }
        for w in ("request", "money", "payment", "amount", "credit")
    ] + [
        {
            "intent": "track",
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": f"Track the parcel {w} online."},
            ],
        }
        for w in ("shipment", "delivery", "package", "box", "order")
    ]
    clf = chk.train_intent_classifier(train, seed=0)
    assert clf.predict(["the refund is processed", "track your parcel online"]) == ["refund", "track"]
    assert clf.accuracy(["your refund is processed"], ["track"]) == 0.0


def test_stratified_sample_covers_intents_and_is_seeded():
    rows = [
        {
            "id": f"{k}-{i}",
            "intent": k,
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        }
        for k, n in (("a", 50), ("b", 5), ("c", 2))
        for i in range(n)
    ]
    s1 = stratified_sample(rows, 9, seed=1)
    assert len(s1) == 9
    counts = {k: sum(r["intent"] == k for r in s1) for k in "abc"}
    assert counts["c"] == 2 and counts["b"] >= 3  # round-robin: rare intents are not drowned out
    assert [r["id"] for r in s1] == [r["id"] for r in stratified_sample(rows, 9, seed=1)]
    assert [r["id"] for r in s1] != [r["id"] for r in stratified_sample(rows, 9, seed=2)]


def _quant_rows(name: str, fmt: str, size: float, rouge_rows: list[float], nll_scale: float = 1.0) -> dict:
    return {"name": name, "format": fmt, "size_bytes": size, "perplexity": 5.0 * nll_scale, "bleu": 20.0,
            "rougeL": sum(rouge_rows) / len(rouge_rows), "tokens_per_s": 40.0, "load_s": 0.5,
            "row_rougeL": rouge_rows, "row_nll": [[1.6 * 10 * nll_scale, 10]] * len(rouge_rows)}  # fmt: skip


def test_quantization_summary_pairs_every_variant_with_f16_on_its_rows():
    from types import SimpleNamespace

    from supportlm.quantize.run import summarize

    p = SimpleNamespace(seed=0)
    f16_rows = [0.40, 0.50, 0.30, 0.45, 0.35, 0.42, 0.38, 0.41]
    v = [
        _quant_rows("fp32", "hf", 400, f16_rows[:4]),  # the reference rows: the first 4
        _quant_rows("f16", "gguf-f16", 200, f16_rows),
        _quant_rows("q4_k_m", "gguf-q4_k_m", 70, [r - 0.025 for r in f16_rows], nll_scale=1.1),
    ]
    s = summarize(v, p)
    fp32, _, q = s["variants"]
    assert q["reduction_vs_f16"] == pytest.approx(0.65) and q["reduction_vs_fp32"] == pytest.approx(0.825)
    assert (fp32["rows"], q["rows"]) == (4, 8)
    assert fp32["rougeL_delta_ci"] == [0.0, 0.0]  # the same replies as f16 on its 4 rows
    # every row 2.5 points lower: the paired difference is exactly -2.5 with no spread
    assert q["rougeL_delta_vs_f16_points"] == pytest.approx(-2.5) and q["rougeL_delta_ci"] == pytest.approx([-2.5, -2.5])
    assert q["perplexity_ratio_vs_f16"]["ratio"] == pytest.approx(math.exp(1.6 * 0.1))
    assert s["overall"]["q4_k_m"]["rows"] == 8


def test_quantization_markdown_shows_intervals_the_rule_and_the_targets(tmp_path):
    from types import SimpleNamespace

    from supportlm.evaluate.metrics import Example
    from supportlm.quantize import select
    from supportlm.quantize.report import render_markdown
    from supportlm.quantize.run import summarize, targets

    p = SimpleNamespace(seed=1, size_reduction_target=0.5, rouge_drop_target=2.0)
    v = [_quant_rows("f16", "gguf-f16", 200e6, [0.4, 0.5, 0.3, 0.6]),
         _quant_rows("q4_k_m", "gguf-q4_k_m", 70e6, [0.375, 0.5, 0.2, 0.6])]  # fmt: skip
    for x in v:
        x["file"] = f"model-{x['name']}.gguf"
    v[1]["kld"] = {"mean_kld": 0.0512, "same_top_p": 0.9}
    s = summarize(v, p)
    choice = select.choose(s["variants"], 2.0, 0.05)
    for x in v:
        x.pop("row_rougeL"), x.pop("row_nll")
    s.update(slice={"rows": 4, "reference_rows": 2, "seed": 1, "max_new_tokens": 16}, base_model="m", params_hash="h",
             timing={"total_s": 3.0}, skipped=[{"name": "bnb_int8", "reason": "no CUDA"}], kld={"tokens": 3060},
             plots=[str(tmp_path / "plots/quantize/x.png")], imatrix=None,
             served={"name": choice["variant"], "rule": choice["rule"], "served_file": "models/gguf/model-served.gguf",
                     "candidates": choice["candidates"]},
             targets=targets(s["variants"], choice["variant"], p))  # fmt: skip
    ex = Example("t1", "orders", [{"role": "user", "content": "hi"}], "line 1\nline | 2")
    md = render_markdown(s, [ex], {"q4_k_m": ["ok"]}, tmp_path)
    # q4_k_m's interval reaches below -2 (rows differ by -2.5, 0, -10, 0): f16 serves, and says why q4_k_m does not
    assert choice["variant"] == "f16" and "## Served: f16" in md
    assert "| q4_k_m | 4 | 70.0 | -65% |" in md and "| -3.12 |" in md and "| 0.0512 | 90.0% |" in md
    low = next(c for c in choice["candidates"] if c["variant"] == "q4_k_m")["rougeL_low_points"]
    assert low < -2 and f"no: ROUGE-L interval reaches {low:+.2f} points, below -2" in md
    assert "| served (f16) size reduction vs f16 | >= 50% | 0.0% | **missed** |" in md
    assert "- `bnb_int8`: no CUDA" in md and "![x](plots/quantize/x.png)" in md
    assert "| reference | line 1<br>line \\| 2 |" in md  # one table line per reply, pipes escaped
    assert "rows to resolve 2 pts" in md


# ---------------------------------------------------------------- the evaluate stage, end to end


def _formatted_rows(n: int) -> list[dict]:
    from model_utils import ASSISTANT_LINES, SYSTEM, USER_LINES

    rows = []
    for i in range(n):
        k = i % len(USER_LINES)
        rows.append(
            {
                "id": f"t{i:03d}",
                "intent": "orders" if k % 2 == 0 else "billing",
                "category": "X",
                "kind": "qa" if i % 3 else "ticket",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": USER_LINES[k]},
                    {"role": "assistant", "content": ASSISTANT_LINES[k]},
                ],
            }
        )
    return rows


def test_evaluate_stage_writes_the_contract(tmp_path):
    """Tiny base vs tiny 'fine-tuned' (another seed): eval.json keys, md, plots, generations, sheet."""
    import json

    from supportlm.config import EvaluateParams
    from supportlm.evaluate.run import evaluate

    base = tiny_model_dir(tmp_path / "base", seed=0)
    ft = tiny_model_dir(tmp_path / "ft", seed=1)
    data = tmp_path / "data"
    data.mkdir()
    for name, n in (("train", 40), ("test", 12)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _formatted_rows(n)))
    p = EvaluateParams(sample_rows=8, max_new_tokens=6, batch_size=4, human_eval_rows=5, classifier_rows=50)
    res = evaluate(
        base,
        ft,
        data / "test.jsonl",
        data / "train.jsonl",
        p,
        tmp_path / "reports",
        base_model_id="tiny",
        params_hash="abc",
    )
    saved = json.loads((tmp_path / "reports" / "eval.json").read_text())
    for system in ("base", "finetuned"):
        block = saved[system]
        assert {"perplexity", "bleu", "rouge1", "rouge2", "rougeL", "checks", "per_intent"} <= set(block)
        assert block["perplexity"] > 1 and 0 <= block["rougeL"] <= 1
        assert set(block["per_intent"]) == {"orders", "billing"}
        assert sum(v["num_samples"] for v in block["per_intent"].values()) == 8
    assert saved["base_model"] == "tiny" and saved["params_hash"] == "abc"
    assert set(saved["per_slice"]) == {"qa", "ticket"}
    assert saved["intent_accuracy_reference"] == pytest.approx(
        1.0
    )  # the classifier sees its training replies
    assert saved["delta"]["rougeL"] == pytest.approx(saved["finetuned"]["rougeL"] - saved["base"]["rougeL"])
    ci = saved["delta_ci"]  # paired over the same 8 rows: the mean difference lies inside its interval
    assert ci["rougeL_points"]["n"] == 8 and ci["rougeL_points"]["delta"] == pytest.approx(100 * saved["delta"]["rougeL"])
    assert ci["rougeL_points"]["low"] <= ci["rougeL_points"]["delta"] <= ci["rougeL_points"]["high"]
    ppl = ci["perplexity_ratio"]
    assert ppl["ratio"] == pytest.approx(saved["finetuned"]["perplexity"] / saved["base"]["perplexity"])
    assert ppl["low"] <= ppl["ratio"] <= ppl["high"]
    assert res["human_eval_sheet"]["items"] == 5
    gens = (tmp_path / "reports" / "eval_generations.jsonl").read_text().splitlines()
    assert len(gens) == 8 and {"base", "finetuned", "reference"} <= set(json.loads(gens[0]))
    md = (tmp_path / "reports" / "eval.md").read_text()
    assert "| ROUGE-L |" in md and md.count("### `t") == 5  # 5 side-by-side examples
    delta = saved["finetuned"]["rougeL"] - saved["base"]["rougeL"]
    assert f"| {saved['finetuned']['rougeL']:.3f} | {delta:+.3f} |" in md  # the delta carries its sign
    assert "| metric | base | fine-tuned | delta |\n|---|---:|---:|---:|" in md
    assert f"ROUGE-L {ci['rougeL_points']['delta']:+.2f} points [" in md
    assert "![metrics](plots/eval/metrics.png)" in md  # images relative to reports/
    for png in ("metrics.png", "per_intent_rougeL.png", "distributions.png"):
        assert (tmp_path / "reports" / "plots" / "eval" / png).stat().st_size > 5_000


@pytest.mark.parametrize(
    ("requested", "cores", "load", "expected"),
    [(3, 2, 9.0, 3), (None, 2, 0.1, 2), (None, 2, 1.2, 1), (None, 2, 6.0, 1), (None, 16, 3.0, 13)],
)
def test_resolve_threads(monkeypatch, requested, cores, load, expected):
    import os

    from supportlm.inference import threads as run

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(run, "busy_cores", lambda: load)  # busy cores right now (/proc/stat)
    assert run.resolve_threads(requested) == expected
    monkeypatch.setattr(run, "busy_cores", lambda: None)  # no /proc: the load average decides
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert run.resolve_threads(requested) == expected


def test_busy_cores_sees_a_spinning_thread():
    import threading
    import time

    from supportlm.inference.threads import busy_cores

    idle = busy_cores(0.3)
    assert idle is not None and 0 <= idle <= (os.cpu_count() or 1)
    stop = time.monotonic() + 1.0
    spinner = threading.Thread(target=lambda: [None for _ in iter(lambda: time.monotonic() > stop, True)])
    spinner.start()
    busy = busy_cores(0.5)
    spinner.join()
    assert busy >= 0.6  # one core pegged by the spinner (other load on the box only adds)
