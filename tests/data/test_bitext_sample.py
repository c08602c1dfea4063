"""The real Bitext sample (../shared/data, CDLA-Sharing-1.0) through the loader and the cleaner."""

from collections import Counter
from pathlib import Path

from supportlm.config import BitextSource, CleanParams
from supportlm.data.clean import clean
from supportlm.data.schema import CATEGORIES, INTENT_TO_CATEGORY
from supportlm.data.sources import load_bitext


def test_loads_every_row_with_canonical_taxonomy(bitext_sample):
    res = load_bitext(BitextSource(name="bitext", type="bitext", path=str(bitext_sample)), bitext_sample.parent)
    assert len(res.records) == 4514 and res.rejected == []  # schema adherence: nothing lost
    intents = Counter(r.intent for r in res.records)
    assert len(intents) == 27 and set(intents) == set(INTENT_TO_CATEGORY)  # the 27 Bitext intents
    assert {r.category for r in res.records} == set(CATEGORIES)  # SHIPPING_ADDRESS etc. mapped to the 11
    for r in res.records:  # category agrees with the taxonomy
        assert r.category == INTENT_TO_CATEGORY[r.intent], r.id
    first = res.records[0]
    assert first.meta["entity_type"] == "order_id" and first.meta["line"] == 2
    assert "{{" in first.messages[1].content  # Bitext placeholders survive loading


def test_cleaning_the_sample_accounts_for_every_row(bitext_sample):
    res = load_bitext(BitextSource(name="bitext", type="bitext", path=str(bitext_sample)), bitext_sample.parent)
    rows = [r.model_dump() for r in res.records]
    out = clean(rows, CleanParams())
    rep = out.report
    assert rep["rows_in"] == 4514 == rep["rows_kept"] + rep["rows_quarantined"]  # nothing vanishes
    assert rep["rows_kept"] > 4000  # real data is mostly clean: most rows survive
    # real templates are not near-duplicates of each other at the default threshold
    assert rep["by_reason"].get("near_duplicate", 0) < 0.05 * 4514
    # the out-of-fold intent classifier is good on real data, so few label issues are raised
    assert rep["labels"]["oof_accuracy"] > 0.9
    assert rep["labels"]["issues"] < 0.05 * 4514


def test_gpu_profile_bitext_source_reads_a_local_copy_of_the_hub_repo(bitext_sample, tmp_path):
    """The GPU profile's `hf` source, pointed at a local copy laid out like the Hub repo (the documented
    route for a host that cannot reach the Hub): every real row maps, with the canonical taxonomy."""
    import gzip
    import shutil

    from supportlm.config import load_params
    from supportlm.data.sources import load_source
    from supportlm.profiles import apply_profile

    repo = Path(__file__).resolve().parents[2]
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(repo / "profiles", tmp_path / "profiles")
    apply_profile("gpu", tmp_path / "params.yaml")
    src = next(s for s in load_params(tmp_path / "params.yaml").ingest.sources if s.type == "hf")
    copy = tmp_path / "bitext-local"
    copy.mkdir()
    with gzip.open(bitext_sample, "rb") as fin, (copy / "Bitext_Sample_27K_responses-v11.csv").open("wb") as fout:
        shutil.copyfileobj(fin, fout)
    res = load_source(src.model_copy(update={"dataset": str(copy)}), seed=42, base_dir=tmp_path)
    assert len(res.records) == 4514 and res.rejected == []
    assert {r.intent for r in res.records} == set(INTENT_TO_CATEGORY)
    assert all(r.category == INTENT_TO_CATEGORY[r.intent] for r in res.records)
