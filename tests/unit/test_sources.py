"""Loaders and bad input: structural problems stop with file + line; content problems are rejected rows."""

import gzip
import json

import pytest

from supportlm.config import BitextSource, ColumnMap, TableSource
from supportlm.data.sources import load_bitext, load_source, load_table
from supportlm.errors import ConfigError, DataError

COLS = ColumnMap(instruction="q", response="a", intent="label", conversation_id="thread")


def table(tmp_path, name, content: bytes, type_="csv", **kw):
    path = tmp_path / name
    path.write_bytes(content)
    return TableSource(name="t", type=type_, path=str(path), columns=kw.pop("columns", COLS), **kw)


def test_csv_with_mapping_keeps_every_row(tmp_path):
    src = table(tmp_path, "t.csv", b"q,a,label,thread\nwhere is my order,It ships today,track_order,c1\nhi,,,c1\n")
    res = load_table(src, tmp_path)
    assert [r.id for r in res.records] == ["t:2"]
    assert res.records[0].category == "ORDER"  # derived from the intent
    assert res.records[0].meta["conversation_id"] == "c1"
    assert res.rejected == [
        {"source": "t", "line": 3, "reason": "missing_intent", "detail": "column `label` is empty",
         "raw": {"q": "hi", "a": "", "label": "", "thread": "c1"}}
    ]


def test_missing_column_names_file_and_columns(tmp_path):
    src = table(tmp_path, "t.csv", b"q,answer,label\nx,y,z\n")
    with pytest.raises(DataError) as exc:
        load_table(src, tmp_path)
    msg = str(exc.value)
    assert "t.csv" in msg and "response -> 'a'" in msg and "Columns present: ['q', 'answer', 'label']" in msg


def test_cp1252_bytes_name_line_and_fix(tmp_path):
    src = table(tmp_path, "t.csv", "q,a,label,thread\nok,fine,review,1\ncaf\xe9,x,review,2\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"t\.csv: line 3: byte 0xe9 is not valid utf-8.*encoding: cp1252"):
        load_table(src, tmp_path)
    fixed = table(tmp_path, "t2.csv", "q,a,label,thread\ncaf\xe9,x,review,2\n".encode("cp1252"), encoding="cp1252")
    assert load_table(fixed, tmp_path).records[0].messages[0].content == "café"


@pytest.mark.parametrize("content", [b"", b"   \n\n"])
def test_empty_files(tmp_path, content):
    with pytest.raises(DataError, match=r"(empty|no header|no JSON lines)"):
        load_table(table(tmp_path, "t.jsonl" if content else "t.csv", content, type_="jsonl" if content else "csv"), tmp_path)


def test_five_megabyte_field_is_loaded_not_crashed(tmp_path):
    big = "x" * (5 * 1024 * 1024)
    src = table(tmp_path, "t.csv", f"q,a,label,thread\n{big},y,review,1\n".encode())
    rec = load_table(src, tmp_path).records[0]
    assert len(rec.messages[0].content) == 5 * 1024 * 1024  # clean quarantines it as too_long later


def test_broken_json_lines_are_rejected_with_line_numbers(tmp_path):
    lines = [
        json.dumps({"q": "where is my parcel", "a": "Here", "label": "track_order"}),
        '{"q": "broken", ',
        "[1, 2]",
        json.dumps({"q": "refund?", "a": "Sure", "label": "get_refund"}),
    ]
    src = table(tmp_path, "t.jsonl", "\n".join(lines).encode(), type_="jsonl")
    res = load_table(src, tmp_path)
    assert [r.id for r in res.records] == ["t:1", "t:4"]
    assert [(r["line"], r["reason"]) for r in res.rejected] == [(2, "invalid_json"), (3, "invalid_json")]
    assert "expected a JSON object" in res.rejected[1]["detail"]
    assert [r["raw"] for r in res.rejected] == ['{"q": "broken", ', "[1, 2]"]  # the line's text, never lost


def test_wrong_mapping_on_jsonl_is_structural(tmp_path):
    src = table(tmp_path, "t.jsonl", json.dumps({"question": "x", "a": "y", "label": "z"}).encode(), type_="jsonl")
    with pytest.raises(DataError, match=r"instruction -> 'q'"):
        load_table(src, tmp_path)


def test_bitext_27k_layout_and_category_aliases(tmp_path):
    path = tmp_path / "b.csv.gz"
    with gzip.open(path, "wt", newline="") as fh:
        fh.write("flags,instruction,category,intent,response\n")
        fh.write('BL,"question about cancelling order {{Order Number}}",ORDER,cancel_order,"I can help."\n')
        fh.write("B,newsletter pls,NEWSLETTER,newsletter_subscription,Done.\n")
    res = load_bitext(BitextSource(name="bx", type="bitext", path=str(path)), tmp_path)
    assert [(r.intent, r.category) for r in res.records] == [
        ("cancel_order", "ORDER"),
        ("newsletter_subscription", "SUBSCRIPTION"),
    ]
    assert res.records[1].meta["bitext_category"] == "NEWSLETTER" and res.records[1].meta["flags"] == "B"


def test_bitext_missing_columns(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("instruction,intent\nx,y\n")
    with pytest.raises(DataError, match=r"response -> 'response', category -> 'category'"):
        load_bitext(BitextSource(name="bx", type="bitext", path=str(path)), tmp_path)


def test_weight_and_max_rows_sample_deterministically(tmp_path):
    rows = "\n".join(f"q{i},a{i},review,{i}" for i in range(100))
    src = table(tmp_path, "t.csv", f"q,a,label,thread\n{rows}\n".encode(), weight=0.3)
    first = [r.id for r in load_source(src, seed=1, base_dir=tmp_path).records]
    again = [r.id for r in load_source(src, seed=1, base_dir=tmp_path).records]
    other = [r.id for r in load_source(src, seed=2, base_dir=tmp_path).records]
    assert len(first) == 30 and first == again and first != other
    capped = src.model_copy(update={"weight": 1.0, "max_rows": 7})
    assert len(load_source(capped, seed=1, base_dir=tmp_path).records) == 7


def test_hf_datasets_local_file_and_saved_dir(tmp_path):
    import datasets

    from supportlm.config import HFSource
    from supportlm.data.sources import load_hf

    rows = [{"q": f"where is order {i}", "a": f"reply {i}", "label": "track_order"} for i in range(5)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = HFSource(name="hf", type="hf", dataset=str(path), columns=ColumnMap(instruction="q", response="a", intent="label"))
    res = load_hf(src, tmp_path)
    assert [r.messages[1].content for r in res.records] == [f"reply {i}" for i in range(5)]
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(saved))
    res2 = load_hf(src.model_copy(update={"dataset": str(saved)}), tmp_path)
    assert [r.id for r in res2.records] == [f"hf:{i}" for i in range(1, 6)]


def test_hf_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    from supportlm.config import HFSource
    from supportlm.data.sources import load_hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    src = HFSource(name="hf", type="hf", dataset="bitext/not-here-offline", columns=COLS)
    with pytest.raises(DataError, match=r"ingest.sources\[hf\].dataset: cannot reach the Hugging Face Hub for dataset "
                       r"`bitext/not-here-offline`.*switched to other data.*--repo-type dataset.*local-dir"):
        load_hf(src, tmp_path)


GPU_BITEXT = "bitext/Bitext-customer-support-llm-chatbot-training-dataset"


@pytest.mark.parametrize("revision", [None, "main"])
def test_hf_hub_id_needs_a_pinned_revision_before_any_request(tmp_path, monkeypatch, revision):
    import huggingface_hub

    from supportlm.config import HFSource
    from supportlm.data.sources import load_hf

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # `make test` exports them
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub, "dataset_info", lambda *a, **k: pytest.fail("the Hub was asked"))
    src = HFSource(name="bitext", type="hf", dataset=GPU_BITEXT, revision=revision, columns=COLS)
    with pytest.raises(ConfigError, match=r"ingest.sources\[bitext\].dataset.revision: .*pinned revision"):
        load_hf(src, tmp_path)


def test_gated_dataset_without_token_says_how_to_get_access(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import huggingface_hub

    from supportlm.config import HFSource
    from supportlm.data.sources import load_hf

    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # `make test` exports the offline ones
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub, "dataset_info", lambda *a, **k: SimpleNamespace(gated="auto"))
    src = HFSource(name="t", type="hf", dataset="org/gated-set", revision="a" * 40, columns=COLS)
    with pytest.raises(ConfigError, match=r"`org/gated-set` is gated.*HF_TOKEN is not set.*datasets/org/gated-set"):
        load_hf(src, tmp_path)


def test_unreachable_hub_fails_at_ingest_naming_the_dataset(tmp_path):
    """The GPU profile's real source against a closed port on 127.0.0.1: a real failed request."""
    import os
    import subprocess
    import sys

    code = (
        "from pathlib import Path\n"
        "from supportlm.config import HFSource, ColumnMap\n"
        "from supportlm.data.sources import load_hf\n"
        f"load_hf(HFSource(name='bitext', type='hf', dataset='{GPU_BITEXT}', revision='{'4' * 40}', "
        "columns=ColumnMap(instruction='instruction', response='response', intent='intent')), Path('.'))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")} | {"HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert f"cannot reach the Hugging Face Hub for dataset `{GPU_BITEXT}`" in proc.stderr, proc.stderr[-2000:]
