"""The clean stage's logic: repair, mask, limit, deduplicate and check labels, losing nothing.

Every input row ends in exactly one place: kept (maybe changed; every change is
recorded with its code) or quarantined with one reason code, its detail and the
original row. `clean_files()` asserts rows_in == rows_kept + rows_quarantined.

Memory stays bounded by what the decisions need, not by the rows: the first pass streams the
input in batches (repairs, structure, token lengths, exact-duplicate keys, MinHash signatures)
and parks each candidate's repaired and original JSON in a memory-mapped Arrow file; the
near-duplicate search and the label model then run on compact columns (a uint32 signature
matrix, the user texts and intents), and a second pass streams the candidates to their files.

Reason codes (quarantine): invalid_record, bad_structure, empty_field, too_long,
exact_duplicate, near_duplicate, label_issue (only with labels.action=drop).
Change codes: unicode_repaired, control_chars_removed, markup_stripped,
whitespace_normalized, pii_masked:{email,phone,card}, label_issue_flagged, relabelled.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ValidationError
from tqdm.auto import tqdm

from supportlm.config import CleanParams, Params
from supportlm.data import dedup, text
from supportlm.data.schema import INTENT_TO_CATEGORY, Record
from supportlm.data.stream import JsonlParts, batches
from supportlm.errors import DataError
from supportlm.io import read_jsonl, write_json
from supportlm.lineage import params_hash, peak_rss_mb
from supportlm.paths import Paths

TokenCounter = Callable[[Sequence[str]], list[int]]

BATCH_ROWS = 5_000  # rows per streamed batch: bounds the Python objects alive at once
OUTPUTS = ("clean", "quarantine", "changes", "label_issues")  # <name>.jsonl in the output directory
# quarantine.jsonl lists its rows by the step that caught them, in the order the steps run
QUARANTINE_PARTS = ("structure", "too_long", "exact_duplicate", "near_duplicate", "label_issue")
_CANDIDATES = pa.schema([("record", pa.large_string()), ("raw", pa.large_string())])


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


def fast_token_counter(tokenizer_file: Path) -> TokenCounter:
    """Token counts from the base model's tokenizer.json through `tokenizers` alone.

    The same ids as its transformers wrapper (without special tokens), without importing torch
    and transformers into the stage: ~370 MB of resident memory that counting does not need.
    The stage hands it one batch (BATCH_ROWS texts) at a time."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))

    def count(texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

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


@dataclass
class _Candidates:
    """What the decisions after the first pass need of each candidate row, in compact columns."""

    ids: list[str] = field(default_factory=list)
    user_texts: list[str] = field(default_factory=list)
    intents: list[str] = field(default_factory=list)
    signatures: list[np.ndarray] = field(default_factory=list)  # one (batch, num_perm) uint32 block each
    repaired: bytearray = field(default_factory=bytearray)  # 1 where the repairs changed the row
    exact: dict[int, int] = field(default_factory=dict)  # index -> first index with the same text
    _exact_index: dedup.ExactIndex = field(default_factory=dedup.ExactIndex)

    def add(self, records: Sequence[Record], repaired: Sequence[bool], p: CleanParams) -> None:
        texts = [r.text() for r in records]
        for rec, txt, changed in zip(records, texts, repaired, strict=True):
            first = self._exact_index.add(txt)
            if first is not None:
                self.exact[len(self.ids)] = first
            self.ids.append(rec.id)
            self.user_texts.append(rec.text(roles=("user",)))
            self.intents.append(rec.intent)
            self.repaired.append(changed)
        self.signatures.append(dedup.signatures(texts, p.dedup.num_perm, p.dedup.shingle_words, seed=p.seed))


def _quarantine_row(rid: str, reason: str, detail: str, raw: Any) -> dict[str, Any]:
    return {"id": rid, "reason": reason, "detail": detail, "record": raw}


def _validate(line: int, raw: Any) -> tuple[Record | None, dict[str, Any] | None]:
    """The row as a Record, or its quarantine entry naming the first bad field."""
    try:
        return Record.model_validate(raw), None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(row)"
        rid = str(raw.get("id", f"line-{line}")) if isinstance(raw, dict) else f"line-{line}"
        return None, _quarantine_row(rid, "invalid_record", f"`{loc}`: {err['msg']}", raw)


def _read_candidates(path: Path) -> Iterator[tuple[dict[str, Any], Any]]:
    """(repaired record, original row) of each candidate, batch by batch from the memory-mapped file."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for k in range(reader.num_record_batches):
            batch = reader.get_batch(k)
            yield from zip(
                map(json.loads, batch.column("record").to_pylist()),
                map(json.loads, batch.column("raw").to_pylist()),
                strict=True,
            )


def _dump(rows: Iterable[Any]) -> list[str]:
    return [json.dumps(r, ensure_ascii=False) for r in rows]


def clean_files(
    rows: Iterable[Any],
    p: CleanParams,
    out_dir: Path,
    count_tokens: TokenCounter = whitespace_token_counter,
    progress: bool = False,
) -> dict[str, Any]:
    """Clean raw Record dicts (the ingest stage's rows, streamed) into out_dir/{clean,quarantine,
    changes,label_issues}.jsonl; return the report. The files appear together, or not at all."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = dict.fromkeys(("repair", "length", "dedup", "labels", "write"), 0.0)
    reasons: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    rows_in = rows_repaired = 0
    cand = _Candidates()
    scratch = out_dir / ".candidates.arrow.part"
    with (
        JsonlParts(out_dir / "clean.jsonl") as kept,
        JsonlParts(out_dir / "quarantine.jsonl", QUARANTINE_PARTS) as quarantine,
        JsonlParts(out_dir / "changes.jsonl") as changes,
        JsonlParts(out_dir / "label_issues.jsonl") as label_issues,
    ):

        def quarantine_(part: str, entry: dict[str, Any]) -> None:
            quarantine.write(entry, part)
            reasons[entry["reason"]] += 1

        def change(entry: dict[str, Any]) -> None:
            changes.write(entry)
            codes.update(entry["codes"])

        try:
            # 1) schema, repairs, structure, length, exact keys and signatures: one streamed pass
            with pa.ipc.new_file(str(scratch), _CANDIDATES) as parked:
                stream = tqdm(rows, desc="clean: repair", disable=not progress, unit="row")
                for batch in batches(stream, BATCH_ROWS):
                    t = time.perf_counter()
                    repaired: list[tuple[Record, Any, bool]] = []
                    for raw in batch:
                        rows_in += 1
                        rec, invalid = _validate(rows_in, raw)
                        if invalid is not None:
                            quarantine_("structure", invalid)
                            continue
                        rec, change_codes, before = _repair_record(rec, p)
                        problem = _structure_problem(rec)
                        if problem:
                            quarantine_("structure", _quarantine_row(rec.id, *problem, raw))
                            continue
                        if change_codes:
                            rows_repaired += 1
                            change(
                                {
                                    "id": rec.id,
                                    "codes": change_codes,
                                    "before": {str(k): v for k, v in before.items()},
                                }
                            )
                        repaired.append((rec, raw, bool(change_codes)))
                    timings["repair"] += time.perf_counter() - t

                    t = time.perf_counter()
                    lengths = count_tokens(["\n".join(m.content for m in r.messages) for r, _, _ in repaired])
                    within: list[tuple[Record, Any, bool]] = []
                    for (rec, raw, changed), n_tok in zip(repaired, lengths, strict=True):
                        if n_tok > p.max_tokens:
                            detail = f"{n_tok:,} tokens > clean.max_tokens={p.max_tokens:,}"
                            quarantine_("too_long", _quarantine_row(rec.id, "too_long", detail, raw))
                        else:
                            rec.meta["n_tokens"] = n_tok
                            within.append((rec, raw, changed))
                    timings["length"] += time.perf_counter() - t

                    t = time.perf_counter()
                    cand.add([r for r, _, _ in within], [c for _, _, c in within], p)
                    timings["dedup"] += time.perf_counter() - t
                    parked.write_batch(
                        pa.record_batch(
                            [
                                _dump(r.model_dump(mode="json") for r, _, _ in within),
                                _dump(w for _, w, _ in within),
                            ],
                            schema=_CANDIDATES,
                        )
                    )

            # 2) near duplicates (earlier rows win) on the signature matrix -----------------------
            t = time.perf_counter()
            sigs = (
                np.concatenate(cand.signatures)
                if cand.signatures
                else np.empty((0, p.dedup.num_perm), np.uint32)
            )
            cand.signatures.clear()
            near = dedup.find_near_duplicates(sigs, p.dedup.near_threshold, skip=set(cand.exact))
            del sigs
            unique = [i for i in range(len(cand.ids)) if i not in cand.exact and i not in near]
            timings["dedup"] += time.perf_counter() - t

            # 3) label issues (cleanlab on out-of-fold probabilities) ----------------------------
            t = time.perf_counter()
            label_summary: dict[str, Any] = {"enabled": p.labels.enabled, "action": p.labels.action}
            found = None
            if p.labels.enabled and len(unique) >= 2 * p.labels.folds:
                from supportlm.data import label_noise

                found = label_noise.find_label_issues(
                    [cand.user_texts[i] for i in unique],
                    [cand.intents[i] for i in unique],
                    p.labels.folds,
                    p.seed,
                )
                label_summary |= {
                    "issues": int(found.is_issue.sum()),
                    "oof_accuracy": round(found.oof_accuracy, 4),
                    "mean_label_quality": round(float(found.quality.mean()), 4),
                    "confused_pairs": found.confused_pairs(10),
                }
            position = {i: k for k, i in enumerate(unique)}
            cand.user_texts.clear()
            timings["labels"] += time.perf_counter() - t

            # 4) every candidate to its file, in row order ---------------------------------------
            t = time.perf_counter()
            label_changed = 0
            for i, (rec, raw) in enumerate(_read_candidates(scratch)):
                if i in cand.exact:
                    detail = f"same text as {cand.ids[cand.exact[i]]}"
                    quarantine_("exact_duplicate", _quarantine_row(rec["id"], "exact_duplicate", detail, raw))
                    continue
                if i in near:
                    j, jac = near[i]
                    detail = f"Jaccard~{jac:.2f} >= {p.dedup.near_threshold} with {cand.ids[j]}"
                    quarantine_("near_duplicate", _quarantine_row(rec["id"], "near_duplicate", detail, raw))
                    continue
                if found is not None:
                    k = position[i]
                    rec["meta"]["label_quality"] = round(float(found.quality[k]), 4)
                    if found.is_issue[k]:
                        predicted = found.classes[found.predicted[k]]
                        label_issues.write(
                            {
                                "id": rec["id"],
                                "given_intent": rec["intent"],
                                "predicted_intent": predicted,
                                "label_quality": rec["meta"]["label_quality"],
                                "action": p.labels.action,
                            }
                        )
                        if p.labels.action == "drop":
                            detail = f"given {rec['intent']}, model says {predicted}"
                            quarantine_("label_issue", _quarantine_row(rec["id"], "label_issue", detail, raw))
                            continue
                        label_changed += not cand.repaired[i]  # a repaired row is counted already
                        if p.labels.action == "relabel":
                            change(
                                {
                                    "id": rec["id"],
                                    "codes": ["relabelled"],
                                    "before": {"intent": rec["intent"]},
                                }
                            )
                            rec["meta"]["original_intent"] = rec["intent"]
                            rec["intent"] = predicted
                            rec["category"] = INTENT_TO_CATEGORY.get(predicted, rec["category"])
                        else:
                            change({"id": rec["id"], "codes": ["label_issue_flagged"], "before": {}})
                            rec["meta"]["label_issue"] = True
                kept.write(rec)
            timings["write"] += time.perf_counter() - t
        finally:
            scratch.unlink(missing_ok=True)

        rows_kept, rows_quarantined = kept.counts["rows"], sum(quarantine.counts.values())
        if rows_in != rows_kept + rows_quarantined:  # the stage's own guarantee: nothing vanishes
            raise AssertionError(
                f"row accounting broken: {rows_in} in != {rows_kept} kept + {rows_quarantined} quarantined"
            )
        return {
            "rows_in": rows_in,
            "rows_kept": rows_kept,
            "rows_quarantined": rows_quarantined,
            "by_reason": dict(sorted(reasons.items())),
            "rows_changed": rows_repaired + label_changed,
            "changes_by_code": dict(sorted(codes.items())),
            "labels": label_summary,
            "seconds": {k: round(v, 3) for k, v in timings.items()}
            | {"total": round(time.perf_counter() - t0, 3)},
        }


def clean(
    rows: Iterable[Any],
    p: CleanParams,
    count_tokens: TokenCounter = whitespace_token_counter,
    progress: bool = False,
) -> CleanResult:
    """`clean_files` into a temporary directory, read back into memory (tests and small inputs)."""
    with tempfile.TemporaryDirectory(prefix="supportlm-clean-") as tmp:
        report = clean_files(rows, p, Path(tmp), count_tokens, progress)
        out = {name: list(read_jsonl(Path(tmp) / f"{name}.jsonl")) for name in OUTPUTS}
    return CleanResult(
        kept=[Record.model_validate(r) for r in out["clean"]],
        quarantine=out["quarantine"],
        changes=out["changes"],
        label_issues=out["label_issues"],
        report=report,
    )


def token_counter(paths: Paths, use_tokenizer: bool = True) -> TokenCounter:
    """The base model's tokenizer as a batch token counter (whitespace words when use_tokenizer is off)."""
    if not use_tokenizer:
        return whitespace_token_counter
    tokenizer_file = paths.base_model / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise DataError(f"{tokenizer_file}: missing input; run `dvc repro base_model` first")
    return fast_token_counter(tokenizer_file)


def run_clean(
    params: Params, paths: Paths, use_tokenizer: bool = True, progress: bool = True
) -> dict[str, Any]:
    """The clean stage: data/raw/records.jsonl -> data/interim/{clean,quarantine,changes,label_issues}.jsonl."""
    t0 = time.perf_counter()
    rows = read_jsonl(paths.raw / "records.jsonl", "ingest")
    report = clean_files(
        rows, params.clean, paths.interim, token_counter(paths, use_tokenizer), progress=progress
    )
    report |= {
        "params_hash": params_hash(params.clean),
        "stage_seconds": round(time.perf_counter() - t0, 3),
        "rows_per_s": round(report["rows_in"] / max(1e-9, time.perf_counter() - t0), 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(paths.reports / "clean.json", report)
    return report
