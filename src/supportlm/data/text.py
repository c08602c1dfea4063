"""Row-level text repairs: unicode (ftfy + NFKC), markup, whitespace, PII masking.

Each function returns the new text and the change codes it applied, so the clean
stage can record exactly what happened to every row.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import ftfy

# ---------------------------------------------------------------- unicode

# Characters that are neither printable nor ordinary whitespace: a quality signal.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\ufeff\ufffd]")


def repair_unicode(text: str, form: str = "NFKC") -> tuple[str, list[str]]:
    """ftfy repairs mojibake ("itâ€™s" -> "it’s"); NFKC then folds compatibility forms.

    Kept as two codes so the report can tell real repairs from routine normalization.
    Curly quotes are left alone: they are not damage.
    """
    codes: list[str] = []
    if text.isascii():  # pure ASCII holds no mojibake and is NFKC already: keeps clean fast
        cleaned = _CONTROL.sub("", text)
        return cleaned, (["control_chars_removed"] if cleaned != text else [])
    fixed = ftfy.fix_text(
        text, normalization=None, uncurl_quotes=False, fix_line_breaks=False, fix_latin_ligatures=False
    )
    if fixed != text:
        codes.append("unicode_repaired")
    normalized = unicodedata.normalize(form, fixed)
    if normalized != fixed:
        codes.append("unicode_normalized")
    cleaned = _CONTROL.sub("", normalized)
    if cleaned != normalized:
        codes.append("control_chars_removed")
    return cleaned, codes


def is_mojibake(text: str) -> bool:
    """ftfy's own heuristic for text that was decoded with the wrong codec."""
    return not text.isascii() and ftfy.badness.is_bad(text)


# ---------------------------------------------------------------- markup

# a cheap pre-check: text with no tag and no entity is never parsed (most rows)
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>|<!--")
_ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#\d{2,6}|#x[0-9a-fA-F]{2,6});")
# whose contents are never text a customer wrote
_INVISIBLE = ("script", "style", "head", "title", "template", "noscript", "iframe", "object")
# elements after which a reader sees a line break
_BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
                     "blockquote", "pre", "hr", "section", "article", "header", "footer", "address"})  # fmt: skip


def has_markup(text: str) -> bool:
    return bool(_TAG.search(text) or _ENTITY.search(text))


def strip_markup(text: str) -> tuple[str, list[str]]:
    """HTML -> the text a reader sees, by lxml's HTML parser (libxml2): script/style/head bodies and
    comments dropped, a line break after block elements and <br>, entities decoded. Placeholders
    {{..}} are plain text to the parser and stay as they are."""
    if not has_markup(text):
        return text, []
    from lxml import etree  # here, not at the top: the gateway imports this module for mask_pii only

    root = _parse_html(text)
    if root is None:  # markup with no content at all, e.g. "<br/>" or "<!-- -->"
        return "", ["markup_stripped"]
    etree.strip_elements(root, *_INVISIBLE, etree.Comment, etree.ProcessingInstruction, with_tail=False)
    for el in root.iter():
        if el.tag in _BREAKS:
            el.tail = "\n" + (el.tail or "")
    return root.text_content().replace("\xa0", " "), ["markup_stripped"]


def _parse_html(text: str) -> Any:
    """The <body> (or whole document) as lxml parses it; None when nothing is left to parse."""
    import lxml.html
    from lxml import etree

    try:
        doc = lxml.html.document_fromstring(text)
    except ValueError:  # a str with an XML encoding declaration: lxml wants bytes for that
        doc = lxml.html.document_fromstring(text.encode("utf-8"))
    except etree.ParserError:  # "Document is empty"
        return None
    body = doc.find("body")
    return body if body is not None else doc


# ---------------------------------------------------------------- whitespace

_SPACES = re.compile(r"[ \t\f\v]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def normalize_whitespace(text: str) -> tuple[str, list[str]]:
    new = text.replace("\r\n", "\n").replace("\r", "\n")
    new = "\n".join(_SPACES.sub(" ", line).strip() for line in new.split("\n"))
    new = _MANY_NEWLINES.sub("\n\n", new).strip()
    return new, (["whitespace_normalized"] if new != text else [])


# ---------------------------------------------------------------- PII

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# card numbers: 16 digits (4x4 with optional space/dash) or 15-digit Amex (starts 34/37, 4-6-5 or
# contiguous). Other bare 15-digit runs stay: Bitext order ids look like 113542617735902.
CARD = re.compile(r"\b(?:\d{4}[ -]?){3}\d{4}\b|\b3[47]\d{2}[ -]?\d{6}[ -]?\d{5}\b")
# phones need a separator structure or a leading +, so bare order numbers never match
PHONE = re.compile(
    r"(?:(?<![\w+])\+\d{1,3}[ .-]?)?(?:\(\d{2,5}\)[ .-]?|(?<![\w-])\d{2,5}[ .-])\d{3,4}[ .-]\d{3,4}\b"
    r"|(?<![\w+])\+\d{7,15}\b"
)
PII_PLACEHOLDERS = {"email": "{{Email Address}}", "card": "{{Credit Card Number}}", "phone": "{{Phone Number}}"}


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_pii(text: str) -> dict[str, int]:
    """Counts per PII type without changing the text (used by the quality report)."""
    counts = {"email": len(EMAIL.findall(text))}
    counts["card"] = sum(1 for m in CARD.finditer(text) if luhn_ok(re.sub(r"\D", "", m.group())))
    counts["phone"] = len(PHONE.findall(CARD.sub(" ", EMAIL.sub(" ", text))))
    return counts


def mask_pii(text: str) -> tuple[str, list[str]]:
    """Replace emails, Luhn-valid card numbers and phone numbers by typed placeholders."""
    codes: list[str] = []
    new, n = EMAIL.subn(PII_PLACEHOLDERS["email"], text)
    if n:
        codes.append("pii_masked:email")

    # card-shaped digit runs that fail Luhn are not cards, but they are not phones either:
    # park them behind sentinels while phones are matched, then put them back
    parked: list[str] = []

    def _card(m: re.Match[str]) -> str:
        if luhn_ok(re.sub(r"\D", "", m.group())):
            return PII_PLACEHOLDERS["card"]
        parked.append(m.group())
        return f"\x00{len(parked) - 1}\x00"

    masked = CARD.sub(_card, new)
    if PII_PLACEHOLDERS["card"] in masked and PII_PLACEHOLDERS["card"] not in new:
        codes.append("pii_masked:card")
    new, n = PHONE.subn(PII_PLACEHOLDERS["phone"], masked)
    if n:
        codes.append("pii_masked:phone")
    new = re.sub(r"\x00(\d+)\x00", lambda m: parked[int(m.group(1))], new)
    return new, codes


def normalize_for_match(text: str) -> str:
    """Lowercased, whitespace-collapsed text: what exact-duplicate detection compares."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())
