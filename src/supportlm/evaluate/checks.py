"""Task checks a support lead would run on generated replies (no reference model needed).

- placeholders: every `{{Slot Name}}` in the reference should appear verbatim in the reply
  (the system prompt asks for it; a reply that writes a made-up order number is a bug);
  also counts placeholders the reply invents (in neither the prompt nor the reference);
- length: reply words / reference words; flagged too short (< 0.5) or too long (> 2.0);
- empty / degenerate: empty after strip, or a repeated-n-gram rate at or above the threshold
  (`the order the order the order ...`), the classic greedy-decoding failure;
- intent: does the reply address the request? A TF-IDF + logistic-regression classifier
  trained on the train split's assistant replies predicts the intent from the generated
  reply; accuracy against the gold intent. Its accuracy on the reference replies is the
  ceiling, reported alongside (`intent_accuracy_reference`).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_WORD = re.compile(r"\w+", re.UNICODE)
SHORT, LONG = 0.5, 2.0  # length-ratio bounds for the too_short / too_long rates


def placeholders(text: str) -> set[str]:
    """Canonical placeholder names in `text` (`{{ Order  Number }}` -> `Order Number`)."""
    return {" ".join(m.split()) for m in PLACEHOLDER.findall(text)}


def conversation_prompt(messages: Sequence[dict[str, str]]) -> str:
    """All prompt text (for "placeholder came from the prompt, not invented")."""
    return "\n".join(m["content"] for m in messages)


def placeholder_check(reply: str, reference: str, prompt: str = "") -> dict[str, Any]:
    """Recall of the reference placeholders in the reply, and the ones it made up."""
    want, got = placeholders(reference), placeholders(reply)
    invented = got - want - placeholders(prompt)
    return {
        "expected": len(want),
        "kept": len(want & got),
        "recall": (len(want & got) / len(want)) if want else None,  # None: nothing to keep
        "invented": len(invented),
    }


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_ngram_rate(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier n-gram: 0 = none repeated, -> 1 = a loop."""
    w = words(text)
    grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def length_ratio(reply: str, reference: str) -> float:
    ref = len(words(reference))
    return len(words(reply)) / ref if ref else float(len(words(reply)) > 0)


def row_checks(
    reply: str, reference: str, prompt: str = "", n: int = 3, degenerate_at: float = 0.5
) -> dict[str, Any]:
    rep = repeated_ngram_rate(reply, n)
    empty = not reply.strip()
    return {
        "placeholders": placeholder_check(reply, reference, prompt),
        "length_ratio": length_ratio(reply, reference),
        "repeated_ngram_rate": rep,
        "empty": empty,
        "degenerate": empty or rep >= degenerate_at,
    }


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean/rate summary of `row_checks` outputs."""
    if not rows:
        return {"num_samples": 0}
    ph = [r["placeholders"] for r in rows]
    with_ph = [p for p in ph if p["expected"]]
    ratios = [r["length_ratio"] for r in rows]
    n = len(rows)
    return {
        "num_samples": n,
        # mean per-row recall over rows whose reference has placeholders
        "placeholder_recall": _mean(p["recall"] for p in with_ph),
        # share of those rows with every placeholder kept
        "placeholder_all_kept_rate": (sum(p["kept"] == p["expected"] for p in with_ph) / len(with_ph))
        if with_ph
        else None,
        "placeholder_rows": len(with_ph),
        "invented_placeholder_rate": sum(p["invented"] > 0 for p in ph) / n,
        "length_ratio_mean": _mean(ratios),
        "length_ratio_median": statistics.median(ratios),
        "too_short_rate": sum(r < SHORT for r in ratios) / n,
        "too_long_rate": sum(r > LONG for r in ratios) / n,
        "empty_rate": sum(r["empty"] for r in rows) / n,
        "degenerate_rate": sum(r["degenerate"] for r in rows) / n,
        "repeated_ngram_rate": _mean(r["repeated_ngram_rate"] for r in rows),
    }


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


# ---------------------------------------------------------------- intent classifier


class IntentClassifier:
    """TF-IDF (word 1-2 grams, sublinear tf) + multinomial logistic regression: reply -> intent.

    Trained in a few seconds on ~10K replies; deterministic (lbfgs, fixed seed).
    """

    def __init__(self, seed: int = 42, max_features: int = 50_000, C: float = 10.0) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.pipe = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=max_features),
            LogisticRegression(C=C, max_iter=2000, random_state=seed),
        )
        self.n_train = 0

    def fit(self, texts: Sequence[str], intents: Sequence[str]) -> IntentClassifier:
        if len(set(intents)) < 2:
            raise ValueError("intent classifier needs at least 2 intents in its training rows")
        self.pipe.fit(list(texts), list(intents))
        self.n_train = len(texts)
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [str(x) for x in self.pipe.predict(list(texts))]

    def accuracy(self, texts: Sequence[str], intents: Sequence[str]) -> float:
        if not texts:
            return float("nan")
        pred = self.predict(texts)
        return sum(p == g for p, g in zip(pred, intents, strict=True)) / len(pred)


def train_intent_classifier(
    rows: Iterable[dict[str, Any]], seed: int = 42, max_rows: int | None = None
) -> IntentClassifier:
    """Fit on the first assistant reply of each formatted train row (the turn we evaluate;
    later turns of a conversation are follow-ups that say little about the intent)."""
    import random

    rows = list(rows)
    if max_rows is not None and len(rows) > max_rows:
        rows = random.Random(seed).sample(rows, max_rows)
    texts, labels = [], []
    for r in rows:
        for m in r["messages"]:
            if m["role"] == "assistant" and m["content"].strip():
                texts.append(m["content"])
                labels.append(r["intent"])
                break
    return IntentClassifier(seed=seed).fit(texts, labels)


def top_counts(values: Iterable[str], k: int = 5) -> list[tuple[str, int]]:
    return Counter(values).most_common(k)
