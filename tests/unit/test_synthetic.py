"""The built-in synthetic generator: deterministic, realistic enough to learn from, and
every injected defect is really in the data and really in the ground truth.

The clean stage is scored against this ground truth, so a defect that is recorded but
not present (or present but not recorded) would silently skew every metric.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import subprocess
import sys
from typing import Any

import ftfy
import pytest
from pydantic import ValidationError

from supportlm.config import DEFECT_TYPES, DefectRates
from supportlm.data.schema import CATEGORIES, INTENT_TO_CATEGORY, INTENTS, Record
from supportlm.data.synthetic import DEFAULT_KINDS, generate
from supportlm.data.synthetic_defects import mojibake
from supportlm.data.synthetic_text import REGISTERS

N = 12_000
SEED = 7
PII = ("pii_email", "pii_phone", "pii_card")

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE_RE = re.compile(r"(?:\+\d{1,3}[ ]?)?(?:\(\d{2,5}\)[ ]?|\d{2,5}[ -])\d{3,4}[ -]\d{3,4}")
CARD_RE = re.compile(r"\b(?:\d{4}[ -]?){3}\d{4}\b|\b\d{4}[ -]?\d{6}[ -]?\d{5}\b")
TAG_RE = re.compile(r"</?(?:p|br|b|div)\b[^>]*>|&(?:amp|nbsp);")


# ---------------------------------------------------------------- helpers


def _fingerprint(records: list[Record], truth: list[dict[str, Any]]) -> str:
    payload = json.dumps([r.model_dump(mode="json") for r in records] + truth, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _trigram_jaccard(a: str, b: str) -> float:
    """Independent of the module's helper on purpose: word 3-grams of normalized text."""

    def grams(t: str) -> set[tuple[str, ...]]:
        w = t.lower().split()
        return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def data() -> tuple[list[Record], list[dict[str, Any]]]:
    return generate(N, SEED)


@pytest.fixture(scope="module")
def by_id(data) -> dict[str, Record]:
    return {r.id: r for r in data[0]}


@pytest.fixture(scope="module")
def truth_by_type(data) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for entry in data[1]:
        for d in entry["defects"]:
            out[d].append(entry)
    return out


@pytest.fixture(scope="module")
def clean(data) -> list[Record]:
    defective = {t["id"] for t in data[1]}
    return [r for r in data[0] if r.id not in defective]


# ---------------------------------------------------------------- determinism & shape


def test_exactly_n_rows_with_unique_sequential_ids(data) -> None:
    records, _ = data
    assert len(records) == N
    assert [r.id for r in records] == [f"syn-{i:06d}" for i in range(N)]
    assert {r.source for r in records} == {"synthetic"}


def test_same_seed_is_identical_and_other_seed_differs() -> None:
    a = _fingerprint(*generate(1500, 3))
    assert a == _fingerprint(*generate(1500, 3))
    assert a != _fingerprint(*generate(1500, 4))


def test_deterministic_across_processes_and_hash_seeds() -> None:
    """No dependence on str hashing / set order: two interpreters with different hash seeds agree."""
    code = (
        "import hashlib, json; from supportlm.data.synthetic import generate; "
        "r, t = generate(400, 11); "
        "print(hashlib.sha256(json.dumps([x.model_dump(mode='json') for x in r] + t, sort_keys=True)"
        ".encode()).hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    assert digests == {_fingerprint(*generate(400, 11))}


def test_every_record_validates_and_has_the_shape_of_its_kind(data) -> None:
    for r in data[0]:
        assert Record.model_validate(r.model_dump()) == r
        roles = [m.role for m in r.messages]
        assert "system" not in roles  # the formatter adds the system prompt
        assert r.category == INTENT_TO_CATEGORY[r.intent]
        assert r.meta["register"] in REGISTERS
        if r.kind == "qa":
            assert roles == ["user", "assistant"]
        elif r.kind == "conversation":
            assert 4 <= len(roles) <= 8 and len(roles) % 2 == 0
            assert roles == ["user", "assistant"] * (len(roles) // 2)
            assert r.meta["turns"] == len(roles) // 2
            assert r.meta["conversation_id"].startswith("conv-")
        else:
            assert r.kind == "ticket"
            assert roles == ["user", "assistant"]
            assert {"priority", "channel", "product_area", "ticket_id"} <= set(r.meta)
            assert r.meta["channel"] in {"email", "web", "chat", "phone"}


def test_tickets_look_like_tickets(clean) -> None:
    tickets = [r for r in clean if r.kind == "ticket"]
    assert tickets
    for r in tickets:
        user = r.messages[0].content
        assert user.startswith("Subject: ") and "\n\n" in user


def test_conversations_have_follow_up_questions(clean) -> None:
    follow_ups = [m.content for r in clean if r.kind == "conversation" for m in r.messages[2::2]]
    assert any("how long" in t for t in follow_ups)
    assert any("one more thing" in t for t in follow_ups)


# ---------------------------------------------------------------- content coverage


def test_all_intents_and_categories_present_in_useful_amounts(data) -> None:
    counts = collections.Counter(r.intent for r in data[0])
    assert set(counts) == set(INTENTS)
    assert min(counts.values()) >= 0.015 * N
    assert {r.category for r in data[0]} == set(CATEGORIES)


def test_kind_mix_follows_the_default(data) -> None:
    counts = collections.Counter(r.kind for r in data[0])
    for kind, share in DEFAULT_KINDS.items():
        assert abs(counts[kind] / N - share) < 0.02, (kind, counts[kind])


def test_custom_kind_mix() -> None:
    records, _ = generate(2000, 5, kinds={"qa": 0.5, "conversation": 0.0, "ticket": 0.5})
    counts = collections.Counter(r.kind for r in records)
    assert counts["conversation"] == 0
    assert abs(counts["qa"] / 2000 - 0.5) < 0.05
    with pytest.raises(ValueError):
        generate(10, 5, kinds={"email": 1.0})


def test_every_register_appears_and_looks_like_itself(clean) -> None:
    by_register: dict[str, list[str]] = collections.defaultdict(list)
    for r in clean:
        if r.kind == "qa":
            by_register[r.meta["register"]].append(r.messages[0].content)
    assert set(by_register) == set(REGISTERS)
    assert all(2 <= len(t.split()) <= 5 for t in by_register["terse"])
    assert all("could you please" in t.lower() for t in by_register["polite"])
    assert all(t.startswith(("hey", "hiya", "yo")) for t in by_register["colloquial"])
    assert any("gonna" in t or "wanna" in t for t in by_register["colloquial"])
    swear = ("bloody", "hell", "crap", "damn", "god's sake", "joke", "nonsense", "kidding")
    assert all(any(w in t.lower() for w in swear) for t in by_register["offensive"])


def test_offensive_users_still_get_professional_replies(clean) -> None:
    replies = [r.messages[1].content.lower() for r in clean if r.meta["register"] == "offensive"]
    assert replies
    assert not any(w in t for t in replies for w in ("bloody", "crap", "damn", "hell "))
    assert all("sorry" in t or "frustration" in t or "apologize" in t for t in replies)


def test_bitext_placeholders_appear(data) -> None:
    text = "\n".join(r.text() for r in data[0][:3000])
    for placeholder in (
        "{{Order Number}}",
        "{{Account Type}}",
        "{{Website URL}}",
        "{{Customer Support Phone Number}}",
        "{{Customer Support Hours}}",
        "{{Invoice Number}}",
        "{{Refund Amount}}",
        "{{Delivery City}}",
        "{{Person Name}}",
        "{{Settings}}",
    ):
        assert placeholder in text, placeholder
    # the template language never leaks: no unfilled {slot} or [a|b] group
    assert not re.search(r"(?<!\{)\{[a-z]+\}(?!\})", text)
    assert not re.search(r"\[[^\]]*\|[^\]]*\]", text)


def test_user_texts_are_varied(clean) -> None:
    users = [r.messages[0].content for r in clean]
    assert len(set(users)) / len(users) >= 0.6


def test_clean_rows_hold_no_accidental_exact_duplicates(data) -> None:
    """Only the injected exact duplicates may repeat (after the clean stage's normalization)."""
    records, truth = data
    dup_ids = {t["id"] for t in truth if "exact_duplicate" in t["defects"]}
    keys = [_norm(r.text()) for r in records if r.id not in dup_ids]
    assert len(keys) == len(set(keys))


# ---------------------------------------------------------------- ground truth


def test_ground_truth_counts_match_the_rates(data, truth_by_type) -> None:
    rates = DefectRates()
    for name in DEFECT_TYPES:
        if name in PII:
            continue
        assert abs(len(truth_by_type[name]) - round(getattr(rates, name) * N)) <= 1, name
    assert sum(len(truth_by_type[p]) for p in PII) == round(rates.pii * N)
    sizes = [len(truth_by_type[p]) for p in PII]
    assert max(sizes) - min(sizes) <= 1  # split evenly


def test_ground_truth_entries_are_well_formed(data, by_id) -> None:
    records, truth = data
    assert len({t["id"] for t in truth}) == len(truth)  # one entry per defective record
    order = {r.id: i for i, r in enumerate(records)}
    assert [order[t["id"]] for t in truth] == sorted(order[t["id"]] for t in truth)
    for t in truth:
        assert set(t) == {"id", "defects", "duplicate_of", "true_intent"}
        assert t["id"] in by_id
        assert t["defects"] and set(t["defects"]) <= set(DEFECT_TYPES)
        families = [d for d in t["defects"] if d not in PII]
        assert len(families) <= 1  # one defect family, PII may ride along
        assert len(t["defects"]) - len(families) <= 1


def test_ground_truth_is_never_stored_in_records(data) -> None:
    for r in data[0]:
        assert not {"defects", "duplicate_of", "true_intent"} & set(r.meta)
        assert "defect" not in json.dumps(r.meta)


def test_exact_duplicates_copy_an_earlier_clean_record(data, by_id, truth_by_type) -> None:
    defective = {t["id"] for t in data[1]}
    for t in truth_by_type["exact_duplicate"]:
        dup, orig = by_id[t["id"]], by_id[t["duplicate_of"]]
        assert orig.id < dup.id and orig.id not in defective
        assert dup.messages == orig.messages
        assert (dup.intent, dup.category, dup.kind) == (orig.intent, orig.category, orig.kind)


def test_near_duplicates_are_small_edits_of_an_earlier_record(data, by_id, truth_by_type) -> None:
    defective = {t["id"] for t in data[1]}
    for t in truth_by_type["near_duplicate"]:
        dup, orig = by_id[t["id"]], by_id[t["duplicate_of"]]
        assert orig.id < dup.id and orig.id not in defective
        assert dup.intent == orig.intent
        assert dup.messages[1:] == orig.messages[1:]  # same reply (and later turns)
        assert _norm(dup.messages[0].content) != _norm(orig.messages[0].content)
        assert _trigram_jaccard(dup.text(), orig.text()) >= 0.9


def test_pii_is_really_in_the_user_text(by_id, truth_by_type) -> None:
    for t in truth_by_type["pii_email"]:
        assert EMAIL_RE.search(by_id[t["id"]].messages[0].content)
    for t in truth_by_type["pii_phone"]:
        assert PHONE_RE.search(by_id[t["id"]].messages[0].content)
    for t in truth_by_type["pii_card"]:
        m = CARD_RE.search(by_id[t["id"]].messages[0].content)
        assert m and _luhn_ok(re.sub(r"\D", "", m.group()))


def test_clean_rows_carry_no_pii(clean) -> None:
    for r in clean:
        assert not EMAIL_RE.search(r.text())
        assert not CARD_RE.search(r.text())


def test_markup_rows_contain_html(by_id, truth_by_type, clean) -> None:
    for t in truth_by_type["markup"]:
        assert TAG_RE.search(by_id[t["id"]].text())
    assert not any(TAG_RE.search(r.text()) for r in clean)


def test_mojibake_rows_are_repaired_by_ftfy(by_id, truth_by_type, clean) -> None:
    for t in truth_by_type["mojibake"]:
        contents = [m.content for m in by_id[t["id"]].messages]
        assert any("â€" in c or "Ã" in c for c in contents)
        for c in contents:
            fixed = ftfy.fix_text(c)
            assert "â€" not in fixed and "Ã" not in fixed
        assert any(ftfy.fix_text(c) != c for c in contents)
    assert all(r.text().isascii() for r in clean)  # only mojibake rows hold non-ASCII


def test_mojibake_round_trips_exactly() -> None:
    original = "It’s “urgent” — my fiancée’s order {{Order Number}} isn’t here."
    broken = mojibake(original)
    assert "â€™" in broken and "Ã©" in broken
    assert ftfy.fix_text(broken, uncurl_quotes=False) == original


def test_empty_field_rows_have_a_blank_turn(by_id, truth_by_type) -> None:
    for t in truth_by_type["empty_field"]:
        assert any(not m.content.strip() for m in by_id[t["id"]].messages)


def test_too_long_rows_exceed_3000_words(by_id, truth_by_type, clean) -> None:
    for t in truth_by_type["too_long"]:
        assert max(len(m.content.split()) for m in by_id[t["id"]].messages) > 3000
    assert max(len(r.text().split()) for r in clean) < 1000


def test_label_flips_change_intent_and_category_together(by_id, truth_by_type) -> None:
    for t in truth_by_type["label_flip"]:
        r = by_id[t["id"]]
        assert t["true_intent"] in INTENTS and r.intent != t["true_intent"]
        assert r.category == INTENT_TO_CATEGORY[r.intent]
    # only flips carry true_intent, only duplicates carry duplicate_of
    for ts in truth_by_type.values():
        for t in ts:
            assert (t["true_intent"] is not None) == ("label_flip" in t["defects"])
            assert (t["duplicate_of"] is not None) == bool(
                {"exact_duplicate", "near_duplicate"} & set(t["defects"])
            )


# ---------------------------------------------------------------- rates & edge cases


def test_defect_rates_are_validated() -> None:
    with pytest.raises(ValidationError):
        DefectRates(markup=0.3)
    with pytest.raises(ValidationError):
        DefectRates(markup=-0.01)
    with pytest.raises(ValidationError):
        DefectRates(typo=0.1)  # type: ignore[call-arg]


def test_zero_rates_give_clean_data_and_rates_do_not_move_clean_content() -> None:
    zero = DefectRates(**{k: 0.0 for k in DefectRates.model_fields})
    clean_records, truth = generate(2000, 9, rates=zero)
    assert truth == []
    records, truth = generate(2000, 9)
    defective = {t["id"] for t in truth}
    same = [a == b for a, b in zip(records, clean_records, strict=True) if a.id not in defective]
    assert all(same) and len(same) == 2000 - len(defective)


def test_impossible_rates_are_refused() -> None:
    high = DefectRates(**{k: 0.2 for k in DefectRates.model_fields})
    with pytest.raises(ValueError, match="lower the rates"):
        generate(1000, 1, rates=high)


@pytest.mark.parametrize("n", [0, 1, 7, 60])
def test_tiny_n(n: int) -> None:
    records, truth = generate(n, 1)
    assert len(records) == n
    assert all(t["id"] in {r.id for r in records} for t in truth)
