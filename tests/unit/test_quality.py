"""The data-quality report on a hand-built dozen rows whose every number is known."""

from __future__ import annotations

import copy
import json
import re

import pytest

from supportlm.config import QualityParams
from supportlm.data.quality import build_quality_report
from supportlm.data.quality_document import QuarantineExamples
from supportlm.data.quality_metrics import js_distance
from supportlm.data.quality_plots import PLOT_FILES, PLOTS_SUBDIR

TOP_KEYS = {
    "completeness",
    "text_quality",
    "label_consistency",
    "distribution",
    "dedup",
    "defect_detection",
    "data_version",
    "summary",
}
ROW_INPUTS = ("raw", "rejected", "kept", "quarantine", "changes", "label_issues", "splits", "defects")
LONG_USER = "I want to know where my package is " + "and why it is so late " * 10  # > 120 chars


def rec(rid, user, assistant, intent, category, kind="qa", meta=None):
    return {
        "id": rid,
        "source": "synthetic",
        "kind": kind,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
        "intent": intent,
        "category": category,
        "meta": meta or {},
    }


TRACK = ("track_order", "ORDER")
CANCEL = ("cancel_order", "ORDER")
REFUND = ("get_refund", "REFUND")


def make_inputs():
    raw = [
        rec("r1", "where is my order", "Track it with {{Order Number}} here", *TRACK),
        rec("r2", "Iâ€™m still waiting for my parcel", "Sorry, let me check", *TRACK),
        rec("r3", "mail me at jane@example.com please", "Sure thing", *TRACK),
        rec("r4", "where is my order", "Track it with {{Order Number}} here", *TRACK),  # exact dup of r1
        rec("r5", "<b>cancel</b> my order", "Done, cancelled", *CANCEL),
        rec("r6", LONG_USER, "   ", *TRACK),  # empty assistant; also carries markup nobody sees
        rec("r7", "where is my parcel now", "Cancelled for you", *CANCEL),  # label flip
        rec("r8", "please cancel order 5", "Cancelled", *CANCEL, kind="ticket"),
        rec("r9", "I want\u200b my money back", "Refund started", *REFUND),
        rec("r10", "call me on 555-123-4567", "We will call", *REFUND),  # phone the cleaner missed
    ]
    rejected = [
        {
            "source": "s",
            "line": 11,
            "reason": "missing_intent",
            "detail": "column `intent` is empty",
            "raw": {},
        }
    ]
    quality = {
        "r1": 0.91,
        "r2": 0.83,
        "r3": 0.97,
        "r5": 0.72,
        "r7": 0.05,
        "r8": 0.25,
        "r9": 0.93,
        "r10": 0.86,
    }
    fixed_text = {
        "r2": "I’m still waiting for my parcel",
        "r3": "mail me at {{Email Address}} please",
        "r5": "cancel my order",
        "r9": "I want my money back",
    }
    kept = []
    for r in raw:
        if r["id"] in ("r4", "r6"):
            continue
        k = copy.deepcopy(r)
        if r["id"] in fixed_text:
            k["messages"][0]["content"] = fixed_text[r["id"]]
        k["meta"] = {"n_tokens": 10, "label_quality": quality[r["id"]]}
        if r["id"] in ("r7", "r8"):
            k["meta"]["label_issue"] = True
        kept.append(k)
    by_id = {k["id"]: k for k in kept}
    quarantine = [
        {"id": "r4", "reason": "exact_duplicate", "detail": "same text as r1", "record": raw[3]},
        {
            "id": "r6",
            "reason": "empty_field",
            "detail": "messages[1] (assistant) is empty or whitespace-only",
            "record": raw[5],
        },
    ]
    changes = [
        {"id": "r2", "codes": ["unicode_repaired"], "before": {}},
        {"id": "r3", "codes": ["pii_masked:email"], "before": {}},
        {"id": "r5", "codes": ["markup_stripped"], "before": {}},
        {"id": "r9", "codes": ["control_chars_removed"], "before": {}},
        {"id": "r7", "codes": ["label_issue_flagged"], "before": {}},
        {"id": "r8", "codes": ["label_issue_flagged"], "before": {}},
    ]
    label_issues = [
        {
            "id": "r7",
            "given_intent": "cancel_order",
            "predicted_intent": "track_order",
            "label_quality": 0.05,
            "action": "flag",
        },
        {
            "id": "r8",
            "given_intent": "cancel_order",
            "predicted_intent": "get_refund",
            "label_quality": 0.25,
            "action": "flag",
        },
    ]
    # train: 2 track + 2 cancel; val: 1 + 1 (same distribution); test: only get_refund (disjoint)
    splits = {
        "train": [by_id[i] for i in ("r1", "r2", "r5", "r7")],
        "val": [by_id[i] for i in ("r3", "r8")],
        "test": [by_id[i] for i in ("r9", "r10")],
    }
    for rows in splits.values():
        for r in rows:
            r["meta"]["group_id"] = r["id"]
    defects = [
        {"id": "r2", "defects": ["mojibake"], "duplicate_of": None, "true_intent": "track_order"},
        {"id": "r3", "defects": ["pii_email"], "duplicate_of": None, "true_intent": "track_order"},
        {"id": "r4", "defects": ["exact_duplicate"], "duplicate_of": "r1", "true_intent": "track_order"},
        {"id": "r5", "defects": ["markup"], "duplicate_of": None, "true_intent": "cancel_order"},
        {
            "id": "r6",
            "defects": ["empty_field", "markup"],
            "duplicate_of": None,
            "true_intent": "track_order",
        },
        {"id": "r7", "defects": ["label_flip"], "duplicate_of": None, "true_intent": "track_order"},
        {"id": "r10", "defects": ["pii_phone"], "duplicate_of": None, "true_intent": "get_refund"},
    ]
    clean_report = {
        "rows_in": 10,
        "rows_kept": 8,
        "rows_quarantined": 2,
        "by_reason": {"empty_field": 1, "exact_duplicate": 1},
        "labels": {
            "enabled": True,
            "action": "flag",
            "issues": 2,
            "oof_accuracy": 0.75,
            "mean_label_quality": 0.6,
        },
    }
    split_report = {
        "counts": {"train": 4, "val": 2, "test": 2},
        "groups": 8,
        "largest_group": 1,
        "rows_in_multi_row_groups": 0,
        "leaked_groups": 1,
        "cross_split_exact_duplicates": 0,
        "conversations_crossing": 0,
    }
    return {
        "raw": raw,
        "rejected": rejected,
        "kept": kept,
        "quarantine": quarantine,
        "changes": changes,
        "label_issues": label_issues,
        "splits": splits,
        "defects": defects,
        "clean_report": clean_report,
        "split_report": split_report,
        "data_version": {"git_sha": "abc1234", "dvc": {"data/raw": "0123456789abcdef"}},
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    report = build_quality_report(
        **make_inputs(), params=QualityParams(drift_alert=0.1, top_confusions=1), reports_dir=out
    )
    return report, out


def test_one_pass_streams_give_the_same_report(built, tmp_path):
    """run_quality hands in read_jsonl generators: each input is iterated once, and rows are not kept."""
    report, out = built
    streams = make_inputs()
    for k in ROW_INPUTS:
        rows = streams[k]
        streams[k] = {s: iter(r) for s, r in rows.items()} if k == "splits" else iter(rows)
    streamed = build_quality_report(
        **streams, params=QualityParams(drift_alert=0.1, top_confusions=1), reports_dir=tmp_path
    )
    assert streamed == report
    for name in ("data_quality.json", "data_quality.md"):
        assert (tmp_path / name).read_text() == (out / name).read_text()


def test_quarantine_examples_first_two_per_reason_in_file_order():
    examples = QuarantineExamples()
    for i in range(4):
        for reason in ("too_long", "bad_structure"):
            examples.add({"id": f"{reason}{i}", "reason": reason, "detail": "", "record": None})
    rows = examples.rows()
    assert [(e["reason"], e["id"]) for e in rows] == [
        ("bad_structure", "bad_structure0"),
        ("bad_structure", "bad_structure1"),
        ("too_long", "too_long0"),
        ("too_long", "too_long1"),
    ]


def test_js_distance_identical_and_disjoint():
    assert js_distance({"a": 1, "b": 1}, {"a": 5, "b": 5}) == 0.0
    assert js_distance([3, 1, 0], [6, 2, 0]) == 0.0
    assert js_distance({"a": 3}, {"b": 2}) == 1.0
    assert js_distance([1, 0], [0, 1]) == 1.0
    assert js_distance({}, {"a": 1}) is None


def test_top_level_keys_and_json_on_disk(built):
    report, out = built
    assert set(report) == TOP_KEYS
    on_disk = json.loads((out / "data_quality.json").read_text())
    assert on_disk == report
    assert report["data_version"] == {"git_sha": "abc1234", "dvc": {"data/raw": "0123456789abcdef"}}


def test_completeness(built):
    c = built[0]["completeness"]
    assert c["raw"]["rows"] == 10 and c["kept"]["rows"] == 8
    assert c["raw"]["fields"]["assistant_text"] == {
        "missing": 0,
        "empty": 1,
        "missing_rate": 0.0,
        "empty_rate": 0.1,
        "incomplete_rate": 0.1,
    }
    assert all(
        c["kept"]["fields"][f]["missing"] + c["kept"]["fields"][f]["empty"] == 0 for f in c["kept"]["fields"]
    )
    assert c["raw"]["fields"]["intent"]["missing"] == 0
    assert c["raw"]["rows_by_kind"] == {"qa": 9, "ticket": 1}
    assert c["kept"]["rows_by_kind"] == {"qa": 7, "ticket": 1}
    assert c["ingest_rejections_by_reason"] == {"missing_intent": 1}


def test_completeness_missing_turn_and_field(tmp_path):
    row = rec("x1", "hi", "yo", *TRACK)
    row["messages"] = row["messages"][:1]  # no assistant turn
    row["category"] = None
    report = build_quality_report([row], [], [], [], [], [], {}, [], {}, {}, {}, QualityParams(), tmp_path)
    f = report["completeness"]["raw"]["fields"]
    assert f["assistant_text"]["missing"] == 1 and f["assistant_text"]["empty"] == 0
    assert f["category"]["missing"] == 1
    assert report["defect_detection"] == {}


def test_text_quality_raw_vs_kept(built):
    t = built[0]["text_quality"]
    raw, kept = t["raw"], t["kept"]
    assert raw["mojibake_rows"] == 1 and raw["mojibake_rate"] == 0.1 and kept["mojibake_rows"] == 0
    assert raw["markup_rows"] == 1 and kept["markup_rows"] == 0
    assert raw["control_char_rows"] == 1 and kept["control_char_rows"] == 0
    assert raw["pii_hits"] == {"email": 1, "phone": 1, "card": 0}
    assert kept["pii_hits"] == {"email": 0, "phone": 1, "card": 0}
    assert raw["placeholder_rows"] == 2 and raw["placeholder_rate"] == 0.2  # r1, r4
    assert kept["placeholder_rows"] == 2 and kept["placeholder_rate"] == 0.25  # r1, masked r3
    assert t["changes_by_code"] == {
        "control_chars_removed": 1,
        "label_issue_flagged": 2,
        "markup_stripped": 1,
        "pii_masked:email": 1,
        "unicode_repaired": 1,
    }
    assert t["rows_changed"] == 6
    assert raw["assistant"]["words"]["max"] == 6  # "Track it with {{Order Number}} here"
    assert raw["user"]["chars"]["max"] == len(LONG_USER)
    assert kept["user"]["chars"]["max"] < len(LONG_USER)


def test_label_consistency(built):
    lc = built[0]["label_consistency"]
    assert lc["summary"] == {
        "enabled": True,
        "action": "flag",
        "issues": 2,
        "oof_accuracy": 0.75,
        "mean_label_quality": 0.6,
    }
    assert lc["issues_per_intent"]["cancel_order"] == {"rows": 3, "issues": 2, "rate": 0.6667}
    assert lc["issues_per_intent"]["track_order"] == {"rows": 3, "issues": 0, "rate": 0.0}
    assert lc["top_confusions"] == [{"given": "cancel_order", "predicted": "get_refund", "count": 1}]
    h = lc["label_quality_histogram"]
    assert h["not_flagged"] == [0, 0, 0, 0, 0, 0, 0, 1, 2, 3]
    assert h["flagged"] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert h["rows"] == 8


def test_distribution_and_drift(built):
    d = built[0]["distribution"]
    train = d["splits"]["train"]
    assert train["rows"] == 4
    assert train["intents"]["track_order"] == {"count": 2, "share": 0.5}
    assert train["categories"] == {"ORDER": {"count": 4, "share": 1.0}}
    assert train["imbalance_ratio"] == 1.0
    assert d["splits"]["test"]["missing_intents"] == ["cancel_order", "track_order"]
    assert d["tokens_per_intent"]["get_refund"] == {"rows": 2, "mean": 10.0}
    pairs = d["drift"]["pairs"]
    assert pairs["train_vs_val"]["intent"] == {"distance": 0.0, "alert": False}
    assert pairs["train_vs_test"]["intent"] == {"distance": 1.0, "alert": True}
    assert pairs["train_vs_val"]["length"] == {"distance": 0.0, "alert": False}  # all rows 10 tokens


def test_imbalance_warning(tmp_path):
    rows = [rec(f"a{i}", "hi", "yo", *TRACK) for i in range(12)] + [rec("b0", "hi", "yo", *CANCEL)]
    report = build_quality_report(
        [], [], [], [], [], [], {"train": rows}, [], {}, {}, {}, QualityParams(), tmp_path
    )
    assert report["distribution"]["splits"]["train"]["imbalance_ratio"] == 12.0
    assert any("imbalance" in w for w in report["summary"]["warnings"])


def test_group_spanning_splits_warns(tmp_path):
    a, b, c = (rec(i, "hi there", "yo", *TRACK, meta={"group_id": "g1"}) for i in ("a", "b", "c"))
    c["meta"]["group_id"] = "g2"
    report = build_quality_report(
        [],
        [],
        [],
        [],
        [],
        [],
        {"train": [a, c], "val": [b], "test": []},
        [],
        {},
        {},
        {},
        QualityParams(),
        tmp_path,
    )
    dd = report["dedup"]
    assert (dd["group_ids_in_splits"], dd["group_ids_spanning_splits"]) == (2, 1)
    assert (dd["groups"], dd["largest_group"], dd["rows_in_multi_row_groups"]) == (2, 2, 2)
    assert any("group_id" in w for w in report["summary"]["warnings"])
    assert report["distribution"]["drift"]["pairs"]["train_vs_test"]["intent"] == {
        "distance": None,
        "alert": False,
    }


def test_dedup(built):
    dd = built[0]["dedup"]
    assert dd["exact_duplicates_removed"] == 1 and dd["near_duplicates_removed"] == 0
    assert dd["duplicate_rate_raw"] == 0.1
    assert dd["leaked_groups"] == 1 and dd["groups"] == 8 and dd["largest_group"] == 1
    assert dd["group_ids_in_splits"] == 8 and dd["group_ids_spanning_splits"] == 0


def test_defect_detection_precision_recall(built):
    det = built[0]["defect_detection"]
    p = det["per_type"]
    for t in ("mojibake", "pii_email", "exact_duplicate", "empty_field"):
        assert (p[t]["precision"], p[t]["recall"], p[t]["support"], p[t]["detected"]) == (1.0, 1.0, 1, 1), t
    # markup: r5 found, r6 was quarantined (empty_field) before its markup could be stripped
    assert p["markup"] | {"signal": None} == {
        "signal": None,
        "support": 2,
        "detected": 1,
        "true_positives": 1,
        "precision": 1.0,
        "recall": 0.5,
        "missed_quarantined_earlier": 1,
    }
    # label_flip: r7 true, r8 a false alarm; the model's guess for r7 is the true intent
    assert (p["label_flip"]["precision"], p["label_flip"]["recall"]) == (0.5, 1.0)
    assert p["label_flip"]["predicted_is_true_intent"] == 1
    # pii_phone: nothing detected -> precision undefined, recall 0
    assert p["pii_phone"]["detected"] == 0 and p["pii_phone"]["precision"] is None
    assert p["pii_phone"]["recall"] == 0.0
    assert set(p) == {
        "mojibake",
        "pii_email",
        "exact_duplicate",
        "markup",
        "empty_field",
        "label_flip",
        "pii_phone",
    }
    # macro: precision over 6 defined types (5 x 1.0 + 0.5), recall over 7 (1,1,1,1,1,0.5,0)
    assert det["macro"] == {"precision": round(5.5 / 6, 4), "recall": round(5.5 / 7, 4), "types": 7}


def test_summary_and_warnings(built):
    s = built[0]["summary"]
    assert (s["rows_raw"], s["rows_kept"], s["rows_quarantined"], s["rows_rejected_at_ingest"]) == (
        10,
        8,
        2,
        1,
    )
    assert s["split_counts"] == {"train": 4, "val": 2, "test": 2}
    assert s["quarantined_by_reason"] == {"empty_field": 1, "exact_duplicate": 1}
    text = "\n".join(s["warnings"])
    assert "intent drift train vs test" in text
    assert "intent drift train vs val" not in text
    assert "leak" in text
    assert "`pii_phone`: recall 0.0" in text and "`markup`: recall 0.5" in text
    assert "`label_flip`" not in text
    assert "imbalance" not in text
    assert s["n_warnings"] == len(s["warnings"])


def test_files_written(built):
    _, out = built
    for name in ("data_quality.json", "data_quality.md", "data_quality.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    for name in PLOT_FILES.values():
        path = out / PLOTS_SUBDIR / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_no_defect_plot_without_ground_truth(tmp_path):
    inputs = make_inputs() | {"defects": []}
    report = build_quality_report(**inputs, params=QualityParams(), reports_dir=tmp_path)
    assert report["defect_detection"] == {}
    assert not (tmp_path / PLOTS_SUBDIR / PLOT_FILES["defects"]).exists()
    md = (tmp_path / "data_quality.md").read_text()
    assert PLOT_FILES["defects"] not in md
    assert len(re.findall(r"!\[[^\]]*\]\(plots/[^)]+\.png\)", md)) == 4


def test_markdown_links_every_plot_and_examples(built):
    _, out = built
    md = (out / "data_quality.md").read_text()
    assert md.startswith("# Data quality report")
    assert "abc1234" in md and "0123456789abcdef" in md
    for png in (out / PLOTS_SUBDIR).glob("*.png"):
        assert f"]({PLOTS_SUBDIR}/{png.name})" in md, png.name
    linked = re.findall(r"!\[[^\]]*\]\((plots/[^)]+)\)", md)
    assert all((out / p).is_file() for p in linked)
    for section in (
        "## Summary",
        "## Completeness",
        "## Text quality",
        "## Label consistency",
        "## Distribution",
        "## Deduplication",
        "## Defect detection",
    ):
        assert section in md
    assert "> ⚠️ **5 warnings:**" in md and "> - ⚠️ defect `pii_phone`: recall 0.0" in md
    # quarantined examples: id, reason, detail, text cut to 120 chars
    assert "| r6 | empty_field |" in md and "| r4 | exact_duplicate | same text as r1 |" in md
    assert LONG_USER.strip() not in md
    assert LONG_USER[:100] in md
    assert "never reaches the later ones" in md


def test_html_self_contained(built):
    _, out = built
    page = (out / "data_quality.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", page)
    assert "<link" not in page and "<script" not in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == len(list((out / PLOTS_SUBDIR).glob("*.png"))) == 5
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "<table>" in page and "<h2>Summary</h2>" in page and 'class="warn"' in page
