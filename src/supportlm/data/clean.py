"""The clean stage's logic: repair, mask, limit, deduplicate and check labels, losing nothing.

Every input row ends in exactly one place: kept (maybe changed; every change is
recorded with its code) or quarantined with one reason code, its detail and the
original row. `clean()` asserts rows_in == rows_kept + rows_quarantined.

Reason codes (quarantine): invalid_record, bad_structure, empty_field, too_long,
exact_duplicate, near_duplicate, label_issue (only with labels.action=drop).
Change codes: unicode_repaired, control_chars_removed, markup_stripped,
whitespace_normalized, pii_masked:{email,phone,card}, label_issue_flagged, relabelled.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from tqdm.auto import tqdm

from supportlm.config import CleanParams, Params
from supportlm.data import dedup, text
from supportlm.data.schema import INTENT_TO_CATEGORY, Record
from supportlm.errors import DataError
from supportlm.io import read_rows, write_json, write_jsonl
from supportlm.lineage import params_hash, peak_rss_mb
from supportlm.paths import Paths

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass
class CleanResult:
    kept: list[Record] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    label_issues: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def whitespace_token_counter(texts: Sequence[str]) -> list[int]:
    """Fallback when no tokenizer is given (unit tests): ~1.3 tokens per word for English BPE."""
    return [int(len(t.split()) * 1.3) + 1 for t in texts]


def hf_token_counter(tokenizer: Any, batch_size: int = 2048) -> TokenCounter:
    def count(texts: Sequence[str]) -> list[int]:
        out: list[int] = []
        for i in range(0, len(texts), batch_size):
            ids = tokenizer(list(texts[i : i + batch_size]), add_special_tokens=False)["input_ids"]
            out.extend(len(x) for x in ids)
        return out

    return count


def _repair_record(rec: Record, p: CleanParams) -> tuple[Record, list[str], dict[int, str]]:
    """Apply the text repairs to every turn; return the new record, change codes and the changed originals."""
    codes: list[str] = []
    before: dict[int, str] = {}
    for i, msg in enumerate(rec.messages):
        new, c = text.repair_unicode(msg.content, p.unicode_form)
        steps = c
        if p.strip_markup:
            new, c = text.strip_markup(new)
            steps += c
        if p.mask_pii:
            new, c = text.mask_pii(new)
            steps += c
        new, c = text.normalize_whitespace(new)
        steps += c
        if new != msg.content:
            before[i] = msg.content
            msg.content = new
        codes.extend(s for s in steps if s not in codes)
    return rec, codes, before


def _structure_problem(rec: Record) -> tuple[str, str] | None:
    if not rec.messages:
        return "bad_structure", "no messages"
    if not any(m.role == "user" for m in rec.messages):
        return "bad_structure", "no user turn"
    if rec.messages[-1].role != "assistant":
        return "bad_structure", f"last turn is `{rec.messages[-1].role}`, expected `assistant`"
    for i, m in enumerate(rec.messages):
        if not m.content.strip():
            return "empty_field", f"messages[{i}] ({m.role}) is empty or whitespace-only"
    if not rec.intent.strip():
        return "empty_field", "intent is empty"
    return None


def clean(
    rows: Sequence[dict[str, Any]],
    p: CleanParams,
    count_tokens: TokenCounter = whitespace_token_counter,
    progress: bool = False,
) -> CleanResult:
    """Run every cleaning step over raw Record dicts (the ingest stage's output)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    res = CleanResult()
    originals: dict[str, dict[str, Any]] = {}

    def quarantine(rid: str, reason: str, detail: str, raw: dict[str, Any]) -> None:
        res.quarantine.append({"id": rid, "reason": reason, "detail": detail, "record": raw})

    # 1) schema, repairs, structure -------------------------------------------------
    candidates: list[Record] = []
    change_codes: dict[str, list[str]] = {}
    for line, raw in enumerate(tqdm(rows, desc="clean: repair", disable=not progress, unit="row"), start=1):
        try:
            rec = Record.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "(row)"
            rid = str(raw.get("id", f"line-{line}")) if isinstance(raw, dict) else f"line-{line}"
            quarantine(rid, "invalid_record", f"`{loc}`: {err['msg']}", raw)
            continue
        originals[rec.id] = raw
        rec, codes, before = _repair_record(rec, p)
        problem = _structure_problem(rec)
        if problem:
            quarantine(rec.id, problem[0], problem[1], raw)
            continue
        if codes:
            change_codes[rec.id] = codes
            res.changes.append({"id": rec.id, "codes": codes, "before": {str(k): v for k, v in before.items()}})
        candidates.append(rec)
    timings["repair"] = time.perf_counter() - t0

    # 2) length limit in tokens ------------------------------------------------------
    t = time.perf_counter()
    lengths = count_tokens(["\n".join(m.content for m in r.messages) for r in candidates])
    within: list[Record] = []
    for rec, n_tok in zip(candidates, lengths, strict=True):
        if n_tok > p.max_tokens:
            quarantine(rec.id, "too_long", f"{n_tok:,} tokens > clean.max_tokens={p.max_tokens:,}", originals[rec.id])
        else:
            rec.meta["n_tokens"] = n_tok
            within.append(rec)
    timings["length"] = time.perf_counter() - t

    # 3) exact then near duplicates (earlier rows win) ------------------------------
    t = time.perf_counter()
    texts = [r.text() for r in within]
    exact = dedup.find_exact_duplicates(texts)
    for i, j in exact.items():
        quarantine(within[i].id, "exact_duplicate", f"same text as {within[j].id}", originals[within[i].id])
    sigs = dedup.signatures(texts, p.dedup.num_perm, p.dedup.shingle_words, seed=p.seed)
    near = dedup.find_near_duplicates(sigs, p.dedup.near_threshold, skip=set(exact))
    for i, (j, jac) in near.items():
        quarantine(
            within[i].id,
            "near_duplicate",
            f"Jaccard~{jac:.2f} >= {p.dedup.near_threshold} with {within[j].id}",
            originals[within[i].id],
        )
    unique = [r for i, r in enumerate(within) if i not in exact and i not in near]
    timings["dedup"] = time.perf_counter() - t

    # 4) label issues (cleanlab on out-of-fold probabilities) ------------------------
    t = time.perf_counter()
    label_summary: dict[str, Any] = {"enabled": p.labels.enabled, "action": p.labels.action}
    if p.labels.enabled and len(unique) >= 2 * p.labels.folds:
        from supportlm.data import label_noise

        user_texts = [r.text(roles=("user",)) for r in unique]
        found = label_noise.find_label_issues(user_texts, [r.intent for r in unique], p.labels.folds, p.seed)
        flagged = 0
        keep: list[Record] = []
        for k, rec in enumerate(unique):
            rec.meta["label_quality"] = round(float(found.quality[k]), 4)
            if not found.is_issue[k]:
                keep.append(rec)
                continue
            flagged += 1
            predicted = found.classes[found.predicted[k]]
            res.label_issues.append(
                {
                    "id": rec.id,
                    "given_intent": rec.intent,
                    "predicted_intent": predicted,
                    "label_quality": rec.meta["label_quality"],
                    "action": p.labels.action,
                }
            )
            if p.labels.action == "drop":
                quarantine(rec.id, "label_issue", f"given {rec.intent}, model says {predicted}", originals[rec.id])
                continue
            if p.labels.action == "relabel":
                res.changes.append({"id": rec.id, "codes": ["relabelled"], "before": {"intent": rec.intent}})
                rec.meta["original_intent"] = rec.intent
                rec.intent = predicted
                rec.category = INTENT_TO_CATEGORY.get(predicted, rec.category)
            else:
                res.changes.append({"id": rec.id, "codes": ["label_issue_flagged"], "before": {}})
                rec.meta["label_issue"] = True
            keep.append(rec)
        unique = keep
        label_summary |= {
            "issues": flagged,
            "oof_accuracy": round(found.oof_accuracy, 4),
            "mean_label_quality": round(float(found.quality.mean()), 4),
            "confused_pairs": found.confused_pairs(10),
        }
    timings["labels"] = time.perf_counter() - t

    res.kept = unique
    rows_in = len(rows)
    if rows_in != len(res.kept) + len(res.quarantine):  # the stage's own guarantee: nothing vanishes
        raise AssertionError(
            f"row accounting broken: {rows_in} in != {len(res.kept)} kept + {len(res.quarantine)} quarantined"
        )
    code_counts = Counter(c for ch in res.changes for c in ch["codes"])
    res.report = {
        "rows_in": rows_in,
        "rows_kept": len(res.kept),
        "rows_quarantined": len(res.quarantine),
        "by_reason": dict(sorted(Counter(q["reason"] for q in res.quarantine).items())),
        "rows_changed": len({c["id"] for c in res.changes}),
        "changes_by_code": dict(sorted(code_counts.items())),
        "labels": label_summary,
        "seconds": {k: round(v, 3) for k, v in timings.items()} | {"total": round(time.perf_counter() - t0, 3)},
    }
    return res


def token_counter(paths: Paths, use_tokenizer: bool = True) -> TokenCounter:
    """The base model's tokenizer as a batch token counter (whitespace words when use_tokenizer is off)."""
    if not use_tokenizer:
        return whitespace_token_counter
    from supportlm.tokenizer import load_tokenizer

    if not paths.base_model.exists():
        raise DataError(f"{paths.base_model}: missing input; run `dvc repro base_model` first")
    return hf_token_counter(load_tokenizer(paths.base_model))


def run_clean(params: Params, paths: Paths, use_tokenizer: bool = True, progress: bool = True) -> dict[str, Any]:
    """The clean stage: data/raw/records.jsonl -> data/interim/{clean,quarantine,changes,label_issues}.jsonl."""
    t0 = time.perf_counter()
    rows = read_rows(paths.raw / "records.jsonl", "ingest")
    res = clean(rows, params.clean, token_counter(paths, use_tokenizer), progress=progress)
    write_jsonl(paths.interim / "clean.jsonl", res.kept)
    write_jsonl(paths.interim / "quarantine.jsonl", res.quarantine)
    write_jsonl(paths.interim / "changes.jsonl", res.changes)
    write_jsonl(paths.interim / "label_issues.jsonl", res.label_issues)
    report = res.report | {
        "params_hash": params_hash(params.clean),
        "stage_seconds": round(time.perf_counter() - t0, 3),
        "rows_per_s": round(len(rows) / max(1e-9, time.perf_counter() - t0), 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(paths.reports / "clean.json", report)
    return report
