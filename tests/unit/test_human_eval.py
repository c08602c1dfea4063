"""Blind A/B sheet round trip: export -> raters fill it (programmatically) -> score.

Expected numbers by hand: rater 1 prefers the fine-tuned reply on 7 rows, the base on 2, 1 tie;
rater 2 prefers fine-tuned on 5, base on 3, 2 ties. Wins 12, losses 5, ties 3 -> win rate 12/17,
Wilson 95% interval (z = 1.96) for 12/17 = [0.4687, 0.8672] (computed from the closed form below).
"""

from __future__ import annotations

import csv
import json
import math
import re

import pytest

from supportlm.errors import DataError
from supportlm.evaluate import human


def _items(n: int = 10) -> list[dict]:
    return [
        {
            "id": f"row-{i}",
            "intent": "refund" if i % 2 else "track_order",
            "messages": [
                {"role": "system", "content": "SYSTEM PROMPT"},
                {"role": "user", "content": f'Question {i}, with a comma and "quotes"\nand a newline'},
            ],
            "base": f"BASE reply {i}",
            "finetuned": f"FT reply {i}",
        }
        for i in range(n)
    ]


def _read(path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _fill(sheet, key, out, plan, rater):
    """plan: list of 'ft' / 'base' / 'tie' per key row order (by row_id); writes a filled copy."""
    keyrows = {r["item"]: r for r in _read(key)}
    rows = _read(sheet)
    want = {f"row-{i}": c for i, c in enumerate(plan)}
    for r in rows:
        k = keyrows[r["item"]]
        choice = want[k["row_id"]]
        if choice == "tie":
            r["choice"] = "tie"
        else:
            system = "finetuned" if choice == "ft" else "base"
            r["choice"] = "A" if k["a"] == system else "b"  # lower case on purpose: accepted
        r["rater"] = rater
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*human.SHEET_COLUMNS, "rater"])
        w.writeheader()
        w.writerows(rows)
    return out


def test_wilson_closed_form():
    lo, hi = human.wilson_interval(12, 17)
    z, p, n = 1.959964, 12 / 17, 17
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((center - half, center + half))
    assert (lo, hi) == pytest.approx((0.4687, 0.8672), abs=1e-4)
    assert human.wilson_interval(0, 10)[0] == 0.0 and human.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_export_is_blind_and_shuffled(tmp_path):
    info = human.export(_items(), tmp_path / "sheet.csv", tmp_path / "key.csv", seed=7)
    sheet, key = _read(tmp_path / "sheet.csv"), _read(tmp_path / "key.csv")
    assert info["items"] == len(sheet) == len(key) == 10
    assert list(sheet[0]) == human.SHEET_COLUMNS
    text = (tmp_path / "sheet.csv").read_text()
    assert (
        "finetuned" not in text and "row-" not in text and "SYSTEM PROMPT" not in text
    )  # nothing gives it away
    assert {r["a"] for r in key} == {"base", "finetuned"}  # both systems appear in position A
    assert [r["row_id"] for r in key] != [f"row-{i}" for i in range(10)]  # order shuffled
    for s, k in zip(sheet, key, strict=True):  # the key really maps A/B to the right replies
        i = k["row_id"].split("-")[1]
        assert s["reply_a"] == ("BASE" if k["a"] == "base" else "FT") + f" reply {i}"
    again = human.export(_items(), tmp_path / "s2.csv", tmp_path / "k2.csv", seed=7)
    assert _read(tmp_path / "k2.csv") == key and again["a_is"] == info["a_is"]  # seeded


def test_html_form_is_self_contained(tmp_path):
    items = _items(3)
    items[0]["finetuned"] = "evil </script><script>alert(1)</script> {{Order Number}}"
    human.export(items, tmp_path / "sheet.csv", tmp_path / "key.csv")
    page = (tmp_path / "sheet.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)  # no external resources
    assert "http://" not in page and "https://" not in page
    assert "new Blob(" in page and "text/csv" in page and page.count('type="radio"') == 9
    assert page.count("</script>") == 1  # the reply's </script> was escaped in HTML and JSON
    assert "{{Order Number}}" in page


def test_round_trip_win_rate_and_ci(tmp_path):
    human.export(_items(), tmp_path / "sheet.csv", tmp_path / "key.csv", seed=3)
    r1 = _fill(
        tmp_path / "sheet.csv",
        tmp_path / "key.csv",
        tmp_path / "r1.csv",
        ["ft"] * 7 + ["base"] * 2 + ["tie"],
        "ann",
    )
    r2 = _fill(
        tmp_path / "sheet.csv",
        tmp_path / "key.csv",
        tmp_path / "r2.csv",
        ["ft"] * 5 + ["base"] * 3 + ["tie"] * 2,
        "bob",
    )
    out = tmp_path / "human_eval.json"
    res = human.score([r1, r2], tmp_path / "key.csv", out)
    assert (res["wins"], res["losses"], res["ties"], res["raters"]) == (12, 5, 3, 2)
    assert res["win_rate"] == pytest.approx(12 / 17)
    assert res["win_rate_ci95"] == pytest.approx([0.4687, 0.8672], abs=1e-4)
    assert res["tie_rate"] == pytest.approx(3 / 20)
    assert res["per_rater"]["ann"] == {"win": 7, "loss": 2, "tie": 1}
    assert json.loads(out.read_text())["win_rate"] == pytest.approx(12 / 17)


def test_unrated_and_invalid_choices_are_reported(tmp_path):
    human.export(_items(4), tmp_path / "sheet.csv", tmp_path / "key.csv")
    rows = _read(tmp_path / "sheet.csv")
    rows[0]["choice"], rows[1]["choice"], rows[2]["choice"] = "A", "maybe", ""
    rows[3]["choice"] = "tie"
    with open(tmp_path / "f.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=human.SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    res = human.score([tmp_path / "f.csv"], tmp_path / "key.csv", None)
    assert res["decided"] == 1 and res["ties"] == 1 and res["unrated"] == 2
    assert res["invalid"] == [{"file": str(tmp_path / "f.csv"), "line": 3, "choice": "maybe"}]


def test_sheet_from_another_export_is_rejected(tmp_path):
    human.export(_items(3), tmp_path / "sheet.csv", tmp_path / "key.csv")
    (tmp_path / "other_key.csv").write_text("item,row_id,intent,a,b\nz999,row-0,x,base,finetuned\n")
    with pytest.raises(DataError, match="not in the key"):
        human.score([tmp_path / "sheet.csv"], tmp_path / "other_key.csv", None)
