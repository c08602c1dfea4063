"""Blind A/B human evaluation: export a rating sheet, score filled sheets.

    supportlm human-eval export               # (the evaluate stage also writes the sheet)
    supportlm human-eval score reports/human_eval_sheet*.csv --key reports/human_eval_key.csv

Export: for each sampled test row, the conversation and two replies, A and B. Which system
(base / finetuned) is A is decided per row by a seeded coin flip, and the row order is
shuffled, so raters cannot learn a position. The mapping lives only in the key file. Two
equivalent sheets are written:
- `<name>.csv`: columns item, conversation, reply_a, reply_b, choice, comment. A rater
  writes A, B or tie in `choice` (spreadsheet users);
- `<name>.html`: one self-contained page (inline CSS/JS, no network) with an A / B / tie radio
  per row and a "Download filled CSV" button that builds the same CSV in the browser (Blob).

Score: every filled sheet (one per rater) is joined to the key. A finetuned "win" is a row where
the rater picked the finetuned reply. Win rate = wins / (wins + losses); ties are counted and
reported separately, never as half wins. The 95% interval is Wilson's score interval
(Wilson 1927; behaves at small n and at rates near 0 or 1, unlike the normal approximation).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supportlm.errors import DataError
from supportlm.io import read_rows, write_json

SHEET_COLUMNS = ["item", "conversation", "reply_a", "reply_b", "choice", "comment"]
KEY_COLUMNS = ["item", "row_id", "intent", "a", "b"]
CHOICES = {"a": "A", "b": "B", "tie": "tie", "t": "tie", "=": "tie"}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def conversation_text(messages: Sequence[dict[str, str]]) -> str:
    """The prompt as a rater sees it: non-system turns, role-labelled."""
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages if m["role"] != "system")


# ---------------------------------------------------------------- export


def export(
    items: Sequence[dict[str, Any]],
    sheet_csv: str | Path,
    key_csv: str | Path,
    html_path: str | Path | None = None,
    seed: int = 42,
    systems: tuple[str, str] = ("base", "finetuned"),
) -> dict[str, Any]:
    """Write the blind sheet (CSV + HTML) and the hidden key.

    Args:
        items: dicts with `id`, `messages` (prompt turns), `intent` and one reply per system name,
            e.g. {"id", "messages", "intent", "base": "...", "finetuned": "..."}.
        sheet_csv: the rater CSV.
        key_csv: item -> which system is A and which is B (keep it away from raters).
        html_path: the HTML form; default: sheet_csv with .html.
        seed: order shuffle + A/B coin flips.
        systems: the two reply keys compared.

    Returns:
        {"items", "sheet", "html", "key", "a_is": Counter of the system placed in A}.
    """
    sheet_csv, key_csv = Path(sheet_csv), Path(key_csv)
    html_path = Path(html_path) if html_path else sheet_csv.with_suffix(".html")
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    sheet_rows, key_rows = [], []
    for n, k in enumerate(order, start=1):
        it = items[k]
        a, b = systems if rng.random() < 0.5 else systems[::-1]
        item = f"q{n:03d}"
        sheet_rows.append(
            {
                "item": item,
                "conversation": conversation_text(it["messages"]),
                "reply_a": it[a],
                "reply_b": it[b],
                "choice": "",
                "comment": "",
            }
        )
        key_rows.append({"item": item, "row_id": it["id"], "intent": it.get("intent", ""), "a": a, "b": b})
    _write_csv(sheet_csv, SHEET_COLUMNS, sheet_rows)
    _write_csv(key_csv, KEY_COLUMNS, key_rows)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(sheet_rows), encoding="utf-8")
    return {
        "items": len(sheet_rows),
        "sheet": str(sheet_csv),
        "html": str(html_path),
        "key": str(key_csv),
        "a_is": dict(Counter(r["a"] for r in key_rows)),
    }


def export_from_generations(
    generations: str | Path = "reports/eval_generations.jsonl",
    sheet_csv: str | Path = "reports/human_eval_sheet.csv",
    key_csv: str | Path = "reports/human_eval_key.csv",
    rows: int | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Re-export a sheet from the evaluate stage's saved generations (no model run): CLI `human-eval export`.

    Args:
        generations: JSONL written by the evaluate stage, one row per test example with `id`, `intent`,
            `messages` (prompt turns), `reference`, `base`, `finetuned`.
        sheet_csv / key_csv: outputs (the HTML form goes next to the CSV).
        rows: first N rows of the (already seeded, intent-stratified) sample; None = all.
        seed: A/B coin flips and row order.
    """
    path = Path(generations)
    items = read_rows(path, "evaluate")
    if rows is not None:
        items = items[:rows]
    if not items:
        raise DataError(f"{path}: no generations to export")
    return export(items, sheet_csv, key_csv, seed=seed)


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    tmp.replace(path)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>supportlm blind A/B rating</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px}}
table{{border-collapse:collapse;width:100%}} td,th{{border:1px solid #ccc;padding:.5rem;vertical-align:top}}
td.t{{white-space:pre-wrap;font-size:.92rem}} th{{background:#f4f4f4}}
.c label{{display:block;white-space:nowrap}} textarea{{width:100%;min-height:3rem}}
#bar{{position:sticky;top:0;background:#fff;padding:.5rem 0;border-bottom:1px solid #ccc}}
</style></head><body>
<h1>Blind A/B rating: which reply is the better support answer?</h1>
<p>For each conversation pick <b>A</b>, <b>B</b> or <b>tie</b>. Judge correctness, helpfulness,
tone and whether placeholders such as <code>{{{{Order Number}}}}</code> are kept. The replies come from two
systems in a random order per row. When done, press <i>Download filled CSV</i> and send the file back.</p>
<div id="bar">Rater: <input id="rater" placeholder="your name or initials">
<button type="button" onclick="save()">Download filled CSV</button> <span id="done"></span></div>
<table><thead><tr><th>#</th><th>Conversation</th><th>Reply A</th><th>Reply B</th><th>Choice</th><th>Comment</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<script>
const ITEMS = {items_json};
function cell(v){{v = String(v == null ? "" : v); return /[",\\n\\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;}}
function count(){{let n = 0; for (const it of ITEMS) if (document.querySelector('input[name="c_' + it.item + '"]:checked')) n++;
  document.getElementById("done").textContent = n + " / " + ITEMS.length + " rated";}}
document.addEventListener("change", count);
function save(){{
  const cols = {columns_json};
  const lines = [cols.concat(["rater"]).join(",")];
  const rater = document.getElementById("rater").value;
  for (const it of ITEMS) {{
    const c = document.querySelector('input[name="c_' + it.item + '"]:checked');
    const row = Object.assign({{}}, it, {{choice: c ? c.value : "", comment: document.getElementById("m_" + it.item).value}});
    lines.push(cols.map(k => cell(row[k])).concat([cell(rater)]).join(","));
  }}
  const blob = new Blob([lines.join("\\n") + "\\n"], {{type: "text/csv;charset=utf-8"}});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "human_eval_filled" + (rater ? "_" + rater.replace(/[^A-Za-z0-9_-]/g, "") : "") + ".csv";
  document.body.appendChild(a); a.click(); a.remove();
}}
count();
</script></body></html>
"""


def render_html(sheet_rows: Sequence[dict[str, Any]]) -> str:
    """Self-contained rating form: no external CSS/JS/fonts, works from file://."""
    trs = []
    for r in sheet_rows:
        i = html.escape(r["item"])
        radios = "".join(
            f'<label><input type="radio" name="c_{i}" value="{v}"> {v}</label>' for v in ("A", "B", "tie")
        )
        trs.append(
            f"<tr><td>{i}</td><td class=t>{html.escape(r['conversation'])}</td>"
            f"<td class=t>{html.escape(r['reply_a'])}</td><td class=t>{html.escape(r['reply_b'])}</td>"
            f'<td class=c>{radios}</td><td><textarea id="m_{i}"></textarea></td></tr>'
        )
    # JSON inside <script>: escape "</" so a reply containing "</script>" cannot end the block
    items_json = json.dumps(list(sheet_rows), ensure_ascii=False).replace("</", "<\\/")
    return _PAGE.format(rows="\n".join(trs), items_json=items_json, columns_json=json.dumps(SHEET_COLUMNS))


# ---------------------------------------------------------------- score


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding="utf-8-sig", newline="") as fh:  # -sig: Excel adds a BOM
        return list(csv.DictReader(fh))


def score(
    files: Sequence[str | Path],
    key: str | Path,
    out_json: str | Path | None = "reports/human_eval.json",
    system: str = "finetuned",
    other: str = "base",
) -> dict[str, Any]:
    """Aggregate filled sheets into the finetuned win rate with a 95% Wilson interval.

    Args:
        files: filled sheets (CSV from the HTML form or a spreadsheet); one per rater.
        key: the key CSV written by `export`.
        out_json: where the result goes (None = don't write).
        system / other: the two systems in the key.

    Returns:
        {"system", "wins", "losses", "ties", "unrated", "decided", "ratings", "raters",
         "win_rate", "win_rate_ci95", "tie_rate", "per_rater", "per_intent", "invalid"}.

    Raises:
        DataError: a file is missing, or a sheet has items that are not in the key.
    """
    key_rows = {r["item"]: r for r in _read_csv(Path(key))}
    if not key_rows:
        raise DataError(f"{key}: empty key file")
    wins = losses = ties = unrated = 0
    per_rater: dict[str, Counter] = {}
    per_intent: dict[str, Counter] = {}
    invalid: list[dict[str, Any]] = []
    for f in files:
        f = Path(f)
        rows = _read_csv(f)
        if rows and "choice" not in rows[0]:
            raise DataError(f"{f}: no `choice` column; is this a human-eval sheet?")
        for lineno, r in enumerate(rows, start=2):  # line 1 = header
            item = r.get("item", "")
            if item not in key_rows:
                raise DataError(f"{f}:{lineno}: item `{item}` is not in the key {key}; wrong key file?")
            rater = (r.get("rater") or "").strip() or f.stem
            c = CHOICES.get((r.get("choice") or "").strip().lower())
            k = key_rows[item]
            counts = per_rater.setdefault(rater, Counter())
            icounts = per_intent.setdefault(k.get("intent", ""), Counter())
            raw = (r.get("choice") or "").strip()
            if c is None:
                if raw:
                    invalid.append({"file": str(f), "line": lineno, "choice": raw})
                unrated += 1
                counts["unrated"] += 1
                continue
            if c == "tie":
                outcome = "tie"
            else:
                picked = k["a"] if c == "A" else k["b"]
                outcome = "win" if picked == system else "loss" if picked == other else "unknown"
            if outcome == "unknown":
                invalid.append({"file": str(f), "line": lineno, "choice": raw})
                continue
            wins += outcome == "win"
            losses += outcome == "loss"
            ties += outcome == "tie"
            counts[outcome] += 1
            icounts[outcome] += 1
    decided = wins + losses
    ratings = decided + ties
    lo, hi = wilson_interval(wins, decided)
    result = {
        "system": system,
        "other": other,
        "files": [str(f) for f in files],
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "unrated": unrated,
        "decided": decided,
        "ratings": ratings,
        "raters": len(per_rater),
        "win_rate": wins / decided if decided else None,  # ties excluded
        "win_rate_ci95": [lo, hi] if decided else None,
        "ci_method": "wilson",
        "tie_rate": ties / ratings if ratings else None,
        "per_rater": {k: dict(v) for k, v in sorted(per_rater.items())},
        "per_intent": {
            k: {**dict(v), "win_rate": v["win"] / (v["win"] + v["loss"]) if v["win"] + v["loss"] else None}
            for k, v in sorted(per_intent.items())
        },
        "invalid": invalid,
    }
    if out_json:
        write_json(Path(out_json), result)
    return result
