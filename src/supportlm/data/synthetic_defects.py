"""Defect injection for the synthetic generator: which rows get which defect, and the corruptions themselves.

Every injected defect is returned as a ground-truth entry, so the clean stage can be
scored against it: duplicates (exact and near), PII (email, phone, card), HTML markup,
mojibake, empty turns, overlong turns and flipped intent labels.
"""

from __future__ import annotations

import bisect
import random
import re
from dataclasses import dataclass
from typing import Any

from supportlm.config import EXCLUSIVE, PII_TYPES
from supportlm.data.schema import INTENTS
from supportlm.data.synthetic_rows import Row
from supportlm.data.synthetic_templates import choice
from supportlm.data.synthetic_text import join_prefix

# PII only co-occurs with families that keep the user text readable: an emptied,
# duplicated or log-flooded user turn would make the PII label meaningless.
_PII_COMPATIBLE = frozenset({"markup", "mojibake", "label_flip"})

TOO_LONG_WORDS = 3000
# Near duplicates must stay clearly above the dedup stage's 0.9 MinHash threshold:
# with 128 permutations its LSH (5 bands x 25 rows) catches a pair at true Jaccard
# 0.93 only ~55% of the time, at 0.96 ~89%, so aim for >= 0.96 where the text allows.
NEAR_DUP_MIN_JACCARD = 0.96


_FIRST = (
    "jane",
    "john",
    "maria",
    "li",
    "ahmed",
    "sofia",
    "lucas",
    "emma",
    "noah",
    "olivia",
    "raj",
    "chen",
    "fatima",
    "tom",
)
_LAST = (
    "doe",
    "smith",
    "garcia",
    "wang",
    "khan",
    "muller",
    "rossi",
    "nguyen",
    "brown",
    "silva",
    "kowalski",
    "ito",
)
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "inbox.example.co.uk")
_EMAIL_PHRASES = (
    "My email is {}.",
    "You can reach me at {}.",
    "Please reply to {}.",
    "my email address is {}",
)
_PHONE_PHRASES = ("Call me on {}.", "My phone number is {}.", "You can ring me at {}.", "my number: {}")
_CARD_PHRASES = ("My card number is {}.", "I paid with card {}.", "The card {} was charged.", "card no. {}")
# Luhn-valid test numbers published by card networks/processors: never real cards.
_TEST_CARDS = (
    "4111111111111111",
    "4242424242424242",
    "4012888888881881",
    "5555555555554444",
    "5105105105105100",
    "6011111111111117",
    "378282246310005",
    "371449635398431",
)


def _email(rng: random.Random) -> str:
    first, last = choice(rng, _FIRST), choice(rng, _LAST)
    style = rng.randrange(3)
    local = (
        f"{first}.{last}{rng.randrange(100)}"
        if style == 0
        else f"{first[0]}{last}"
        if style == 1
        else f"{first}_{last}"
    )
    return f"{local}@{choice(rng, _DOMAINS)}"


def _phone(rng: random.Random) -> str:
    """Numbers from ranges reserved for fiction (US 555-01xx, UK Ofcom drama ranges)."""
    k = rng.randrange(5)
    if k == 0:
        return f"+1 415-555-01{rng.randrange(100):02d}"
    if k == 1:
        return f"(020) 7946 0{rng.randrange(1000):03d}"
    if k == 2:
        return f"+44 20 7946 0{rng.randrange(1000):03d}"
    if k == 3:
        return f"+1 (212) 555-01{rng.randrange(100):02d}"
    return f"0161 496 0{rng.randrange(1000):03d}"


def _card(rng: random.Random) -> str:
    digits = choice(rng, _TEST_CARDS)
    sep = choice(rng, (" ", "-", " ", ""))
    if len(digits) == 15:  # Amex groups 4-6-5
        return sep.join((digits[:4], digits[4:10], digits[10:])) if sep else digits
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


_PII_MAKERS = {
    "pii_email": (_EMAIL_PHRASES, _email),
    "pii_phone": (_PHONE_PHRASES, _phone),
    "pii_card": (_CARD_PHRASES, _card),
}


def _insert_pii(text: str, kind: str, rng: random.Random) -> str:
    """Add a PII sentence to the user text (into a ticket's body, before its sign-off)."""
    phrases, make = _PII_MAKERS[kind]
    sentence = choice(rng, phrases).format(make(rng))
    parts = text.split("\n\n")
    if len(parts) >= 3:
        parts[-2] = f"{parts[-2]} {sentence}"
        return "\n\n".join(parts)
    return f"{text} {sentence}"


_MARKUP_CLASSES = ("msg-body", "ticket-content", "ql-editor", "email-body", "chat-bubble")


def _markup(text: str, rng: random.Random) -> str:
    """HTML as a web form or email export leaves it: wrappers, <br/>, <b>, entities."""
    t = text.replace("\n", "<br/>\n") if rng.random() < 0.7 else text
    if " and " in t and rng.random() < 0.7:
        t = t.replace(" and ", " &amp; ", 1)
    words = t.split(" ")
    # tags and &nbsp; go between plain words only, so a co-occurring email/phone/card stays intact
    plain = [i for i, w in enumerate(words) if w.isalpha()]
    if len(plain) > 3 and rng.random() < 0.6:
        i = choice(rng, plain)
        words[i] = f"<b>{words[i]}</b>"
    pairs = [i for i in plain if i + 1 < len(words) and words[i + 1].isalpha()]
    if pairs:
        j = choice(rng, pairs)
        words[j] = words[j] + "&nbsp;" + words[j + 1]
        del words[j + 1]
    t = " ".join(words)
    style = rng.randrange(3)
    if style == 0:
        return f"<p>{t}</p>"
    if style == 1:
        return f'<div class="{choice(rng, _MARKUP_CLASSES)}"><p>{t}</p></div>'
    return f'<div class="{choice(rng, _MARKUP_CLASSES)}">{t}<br/></div>'


# cp1252 decodes 0x80-0x9F to typographic characters; bytes it leaves undefined
# (0x81, 0x8D, 0x8F, 0x90, 0x9D) keep their Latin-1 control character, which is what
# ftfy's "sloppy-windows-1252" expects. With errors="replace" they would become U+FFFD
# and e.g. a closing quote (E2 80 9D) could never be repaired.
def _cp1252_high() -> dict[int, str]:
    table = {}
    for b in range(0x80, 0xA0):
        try:
            table[b] = bytes([b]).decode("cp1252")
        except UnicodeDecodeError:
            pass
    return table


_CP1252_HIGH = _cp1252_high()
_DOUBLE_QUOTED = re.compile(r'"([^"\n]*)"')
_NON_ASCII_TAILS = (
    " Thanks \u2014 it\u2019s much appreciated.",
    " My name is Ren\u00e9.",
    " It\u2019s for my fianc\u00e9e.",
    " I\u2019m in a hurry \u2014 thank you!",
    " (Sent from Zo\u00eb\u2019s laptop.)",
)


def mojibake(text: str) -> str:
    """UTF-8 bytes read back as Windows-1252: "it’s" -> "itâ€™s". ftfy.fix_text undoes it."""
    return text.encode("utf-8").decode("latin-1").translate(_CP1252_HIGH)


def _typographic(text: str, rng: random.Random) -> str:
    """Make the text non-ASCII the way word processors do (curly quotes, dashes, accents)."""
    t = _DOUBLE_QUOTED.sub("\u201c\\1\u201d", text).replace("'", "\u2019").replace(" - ", " \u2014 ")
    if t.isascii() or rng.random() < 0.4:
        t += choice(rng, _NON_ASCII_TAILS)
    return t


_EMPTY_CONTENT = ("", " ", "   \n ", "\n\n", "\t ")


_LOG_LEVELS = ("INFO", "WARN", "ERROR", "DEBUG")
_LOG_SERVICES = (
    "checkout-service",
    "auth-gateway",
    "cart-api",
    "payment-worker",
    "notification-svc",
    "order-sync",
)
_LOG_EVENTS = (
    "request completed status=200 path=/api/v2/orders duration_ms={n}",
    "retrying upstream call attempt={k} reason=timeout host=pay.internal",
    "user session refreshed token_ttl=3600 device=mobile",
    "payment authorization failed code=05 issuer_declined order={{Order Number}}",
    "cache miss key=cart:{n} fallback=db",
    "webhook delivered to courier endpoint status=202 retries={k}",
    "slow query detected table=orders rows={n} threshold_ms=500",
    "email queued template=order_confirmation locale=en-GB",
)


def _log_pool(size: int = 4000) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """A fixed pool of app-log lines (private fixed-seed Random), built once at import.

    Each too_long row samples ~140 lines from it at random, so two pasted logs share
    only a few lines and do not look like near duplicates of each other.
    """
    prng = random.Random(20240501)
    lines = []
    for _ in range(size):
        n, k = str(prng.randrange(10, 10_000)), str(prng.randrange(1, 6))
        event = choice(prng, _LOG_EVENTS).replace("{n}", n).replace("{k}", k)
        stamp = f"2024-05-{prng.randrange(1, 29):02d} {prng.randrange(24):02d}:{prng.randrange(60):02d}:{prng.randrange(60):02d}"
        lines.append(
            f"{stamp} {choice(prng, _LOG_LEVELS)} [{choice(prng, _LOG_SERVICES)}] req={prng.getrandbits(32):08x} {event}"
        )
    return tuple(lines), tuple(line.count(" ") + 1 for line in lines)


_LOG_LINES, _LOG_WORDS = _log_pool()


def _too_long(text: str, role: str, rng: random.Random) -> str:
    """A user pasting a whole log, or an agent pasting the same answer over and over."""
    if role == "user":
        lines: list[str] = []
        words = 0
        while words <= TOO_LONG_WORDS:
            k = int(rng.random() * len(_LOG_LINES))
            lines.append(_LOG_LINES[k])
            words += _LOG_WORDS[k]
        return f"{text}\n\nHere is the full log from the app:\n" + "\n".join(lines)
    per = max(1, len(text.split()))
    return "\n\n".join([text] * (TOO_LONG_WORDS // per + 2))


_SYNONYMS = {
    "want": "wish",
    "need": "require",
    "help": "assist",
    "buy": "purchase",
    "get": "receive",
    "problem": "issue",
    "issue": "problem",
    "can": "could",
    "Can": "Could",
    "Hi": "Hello",
    "Hello": "Hi",
    "please": "kindly",
    "change": "modify",
    "email": "e-mail",
    "my": "my own",
    "How": "So how",
    "What": "So what",
}
_SYNONYM_RE = re.compile(r"\b(" + "|".join(sorted(_SYNONYMS, key=len, reverse=True)) + r")\b")
_FILLERS = ("just", "actually", "really", "basically", "honestly")
_PREFIXES = ("So, ", "Ok so ", "Um, ", "Hi again, ", "Quick question: ", "Sorry, ")


def _edit_synonym(text: str, rng: random.Random) -> str | None:
    matches = list(_SYNONYM_RE.finditer(text))
    if not matches:
        return None
    m = choice(rng, matches)
    return text[: m.start()] + _SYNONYMS[m.group(1)] + text[m.end() :]


def _edit_filler(text: str, rng: random.Random) -> str | None:
    words = text.split(" ")
    if len(words) < 3:
        return None
    i = rng.randrange(1, len(words))
    return " ".join(words[:i] + [choice(rng, _FILLERS)] + words[i:])


def _edit_punct(text: str, rng: random.Random) -> str | None:
    if text.endswith(("?", ".", "!")):
        return text[:-1] if rng.random() < 0.5 else text[:-1] + "!!"
    return text + choice(rng, ("?", ".", "!"))


def _edit_case(text: str, rng: random.Random) -> str | None:
    return text.lower() if text != text.lower() else text.capitalize()


def _edit_prefix(text: str, rng: random.Random) -> str | None:
    return join_prefix(choice(rng, _PREFIXES), text)


_WORD_EDITS = (_edit_synonym, _edit_filler, _edit_prefix)
_SECOND_EDITS = (_edit_case, _edit_punct, _edit_synonym)


def _grams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams: the shingles whose Jaccard the dedup stage's MinHash estimates."""
    w = text.lower().split()
    return {tuple(w[i : i + n]) for i in range(max(1, len(w) - n + 1))}


def _row_text(messages: list[list[str]]) -> str:
    return "\n".join(c for r, c in messages if r in ("user", "assistant"))


def _edit_candidates(text: str, rng: random.Random) -> list[str]:
    """Edited versions of `text`, one or two small edits each, in a random preference order."""
    singles = [e for e in (f(text, rng) for f in _WORD_EDITS) if e]
    rng.shuffle(singles)
    doubles = [e for e in (choice(rng, _SECOND_EDITS)(t, rng) for t in singles) if e]
    # the word-level edit comes first, so a copy always differs after case/space normalization
    out = doubles + singles if rng.random() < 0.5 else singles + doubles
    return out + [join_prefix(p, text) for p in _PREFIXES]


def _near_duplicate(src: Row, rng: random.Random, seen: set[bytes]) -> Row:
    """Copy with 1-2 small edits in the first user turn, well above the dedup threshold.

    Candidates below NEAR_DUP_MIN_JACCARD or textually equal (after normalization) to
    any existing row are skipped, so a near duplicate never doubles as an exact one.
    """
    row = src.copy()
    original = src.messages[0][1]
    base = _grams(_row_text(src.messages))
    best, best_j = join_prefix(_PREFIXES[0], original), -1.0
    for text in _edit_candidates(original, rng):
        row.messages[0][1] = text
        if row.key() in seen:
            continue
        g = _grams(_row_text(row.messages))
        j = len(g & base) / len(g | base)
        if j >= NEAR_DUP_MIN_JACCARD:
            best = text
            break
        if j > best_j:
            best, best_j = text, j
    row.messages[0][1] = best
    seen.add(row.key())
    return row


# ---------------------------------------------------------------- defect plan


@dataclass
class DefectPlan:
    family: dict[int, str]  # row index -> exclusive defect family
    pii: dict[int, str]  # row index -> pii type
    source: dict[int, int]  # duplicate row index -> index of the clean row it copies


def plan_defects(n: int, counts: dict[str, int], rng: random.Random) -> DefectPlan:
    """Decide which rows get which defect, and which earlier clean row each duplicate copies."""
    n_exclusive = sum(counts[f] for f in EXCLUSIVE)
    n_dups = counts["exact_duplicate"] + counts["near_duplicate"]
    n_pii = sum(counts[t] for t in PII_TYPES)
    if n_exclusive + (1 if n_dups else 0) > n:
        raise ValueError(f"defect rates ask for {n_exclusive} defective rows out of {n}; lower the rates")
    order = list(range(n))
    rng.shuffle(order)
    family: dict[int, str] = {}
    pos = 0
    for name in EXCLUSIVE:
        for idx in order[pos : pos + counts[name]]:
            family[idx] = name
        pos += counts[name]
    pool = order[pos:] + [i for i in order[:pos] if family[i] in _PII_COMPATIBLE]
    if n_pii > len(pool):
        raise ValueError(f"not enough rows left for {n_pii} PII rows out of {n}; lower the rates")
    pii_rows = rng.sample(pool, n_pii)
    pii: dict[int, str] = {}
    start = 0
    for name in PII_TYPES:
        for idx in pii_rows[start : start + counts[name]]:
            pii[idx] = name
        start += counts[name]

    clean = [i for i in range(n) if i not in family and i not in pii]
    targets = sorted(i for i, f in family.items() if f in ("exact_duplicate", "near_duplicate"))
    if targets and not clean:
        raise ValueError("duplicates need at least one clean row to copy; lower the rates")
    if targets and targets[0] < clean[0]:
        # a duplicate must copy an *earlier* clean row: swap roles with the first clean row
        t, c = targets[0], clean[0]
        family[c] = family.pop(t)
        clean[0] = t
        targets = sorted(i for i, f in family.items() if f in ("exact_duplicate", "near_duplicate"))
    source = {}
    for t in targets:
        k = bisect.bisect_left(clean, t)
        source[t] = clean[rng.randrange(k)]
    return DefectPlan(family, pii, source)


def _pick_message(row: Row, rng: random.Random, role: str | None = None) -> int:
    """Index of the user or assistant turn a defect goes into."""
    role = role or choice(rng, ("user", "assistant"))
    idxs = [i for i, (r, _) in enumerate(row.messages) if r == role]
    return choice(rng, idxs)


def inject_defects(
    i: int, rows: list[Row], plan: DefectPlan, rng: random.Random, ids: list[str], seen: set[bytes]
) -> dict[str, Any] | None:
    """Inject row i's planned defects in place; return its ground-truth entry (None if clean)."""
    fam = plan.family.get(i)
    pii = plan.pii.get(i)
    if fam is None and pii is None:
        return None
    truth: dict[str, Any] = {"id": ids[i], "defects": [], "duplicate_of": None, "true_intent": None}
    row = rows[i]
    if fam == "exact_duplicate":
        row = rows[plan.source[i]].copy()
        truth["duplicate_of"] = ids[plan.source[i]]
    elif fam == "near_duplicate":
        row = _near_duplicate(rows[plan.source[i]], rng, seen)
        truth["duplicate_of"] = ids[plan.source[i]]
    if pii is not None:
        # first, so markup/mojibake then wrap the PII sentence like the rest of the turn;
        # every kind opens with the user turn
        row.messages[0][1] = _insert_pii(row.messages[0][1], pii, rng)
    if fam == "markup":
        m = _pick_message(row, rng)
        row.messages[m][1] = _markup(row.messages[m][1], rng)
    elif fam == "mojibake":
        m = _pick_message(row, rng)
        row.messages[m][1] = mojibake(_typographic(row.messages[m][1], rng))
    elif fam == "empty_field":
        m = _pick_message(row, rng)
        row.messages[m][1] = choice(rng, _EMPTY_CONTENT)
    elif fam == "too_long":
        role = choice(rng, ("user", "assistant"))
        m = _pick_message(row, rng, role)
        row.messages[m][1] = _too_long(row.messages[m][1], role, rng)
    elif fam == "label_flip":
        truth["true_intent"] = row.intent
        row.intent = choice(rng, [x for x in INTENTS if x != row.intent])
    rows[i] = row
    truth["defects"] = [d for d in (fam, pii) if d is not None]
    return truth
