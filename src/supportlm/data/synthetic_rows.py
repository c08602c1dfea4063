"""Defect-free synthetic rows: QA pairs, multi-turn conversations and ticket-shaped exchanges."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from supportlm.data.schema import INTENT_TO_CATEGORY, INTENTS
from supportlm.data.synthetic_templates import choice
from supportlm.data.synthetic_text import (
    CLOSING_TURN,
    FOLLOWUPS,
    INTENT_SPECS,
    REGISTER_WEIGHTS,
    REGISTERS,
    Intent,
    add_typos,
    assistant_text,
    user_text,
)


@dataclass
class Row:
    """A record under construction: plain lists, turned into a `Record` at the very end."""

    kind: str
    intent: str
    messages: list[list[str]]  # [role, content]
    meta: dict[str, Any]

    def key(self) -> bytes:
        """Digest of the lower-cased text: what exact-duplicate detection compares.

        Generated text never differs from another row by whitespace alone, so
        lower-casing matches the clean stage's normalization without its cost.
        """
        text = "\x1f".join([c for _, c in self.messages]).lower()
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    def copy(self) -> Row:
        return Row(self.kind, self.intent, [list(m) for m in self.messages], dict(self.meta))


_PRIORITIES = ("low", "normal", "high", "urgent")
_PRIORITY_W = (0.3, 0.45, 0.2, 0.05)
_CHANNELS = ("email", "web", "chat", "phone")
_AREA_BY_CATEGORY = {
    "ACCOUNT": "customer account",
    "CANCEL": "billing",
    "CONTACT": "customer care",
    "DELIVERY": "logistics",
    "FEEDBACK": "customer care",
    "INVOICE": "billing",
    "ORDER": "orders",
    "PAYMENT": "checkout",
    "REFUND": "returns",
    "SHIPPING": "logistics",
    "SUBSCRIPTION": "marketing",
}
_AREAS = tuple(sorted(set(_AREA_BY_CATEGORY.values())) + ["mobile app", "web shop"])
_GREETINGS = (
    "Hello,",
    "Hi team,",
    "Dear Customer Support,",
    "Hello Support Team,",
    "To whom it may concern,",
    "Hi,",
)
_SIGNOFFS = (
    "Best regards,\n{{Person Name}}",
    "Thanks,\n{{Person Name}}",
    "Kind regards,\n{{Person Name}}",
    "Regards,\n{{Person Name}}\n{{Account Type}} customer",
    "Sent from my phone",
)
_TICKET_REPLY_OPEN = ("Dear {{Person Name}},", "Hello {{Person Name}},", "Hi {{Person Name}},")
_TICKET_REPLY_CLOSE = (
    "Kind regards,\nCustomer Support Team",
    "Best regards,\nThe Support Team",
    "Thank you,\nCustomer Care",
)


def _qa(spec: Intent, register: str, rng: random.Random) -> Row:
    msgs = [["user", user_text(spec, register, rng)], ["assistant", assistant_text(spec, register, rng)]]
    return Row("qa", spec.name, msgs, {"register": register})


def _conversation(spec: Intent, register: str, rng: random.Random) -> Row:
    """2-4 user/assistant exchanges on one intent, ending with the assistant."""
    exchanges = rng.randint(2, 4)
    msgs = [["user", user_text(spec, register, rng)], ["assistant", assistant_text(spec, register, rng)]]
    picks = rng.sample(range(len(FOLLOWUPS)), exchanges - 1)
    if rng.random() < 0.5:  # often the customer closes with a thank-you
        picks[-1] = -1
    for p in picks:
        users, replies = CLOSING_TURN if p < 0 else FOLLOWUPS[p]
        question = choice(rng, users).render(rng)
        if register == "typos":
            question = add_typos(question, rng)
        answer = choice(rng, replies).render(rng).replace("{topic}", spec.topic)
        msgs += [["user", question], ["assistant", answer]]
    meta = {"register": register, "conversation_id": f"conv-{rng.getrandbits(40):010x}", "turns": exchanges}
    return Row("conversation", spec.name, msgs, meta)


def _ticket(spec: Intent, register: str, rng: random.Random) -> Row:
    """A ticket-shaped user message (subject + body + sign-off) and a letter-style reply."""
    priority = rng.choices(_PRIORITIES, _PRIORITY_W)[0]
    if register == "offensive" and priority in ("low", "normal"):
        priority = "high"  # angry customers get escalated
    subject = choice(rng, spec.subjects).render(rng)
    if priority == "urgent" or (register == "offensive" and rng.random() < 0.5):
        subject = "URGENT: " + subject
    body = user_text(spec, register, rng)
    user = f"Subject: {subject}\n\n{choice(rng, _GREETINGS)}\n\n{body}\n\n{choice(rng, _SIGNOFFS)}"
    reply = (
        f"{choice(rng, _TICKET_REPLY_OPEN)}\n\n{assistant_text(spec, register, rng)}\n\n"
        f"{choice(rng, _TICKET_REPLY_CLOSE)}"
    )
    # Routing is usually right but not always: product_area correlates with, but does not reveal, the intent.
    category = INTENT_TO_CATEGORY[spec.name]
    area = _AREA_BY_CATEGORY[category] if rng.random() < 0.7 else choice(rng, _AREAS)
    meta = {
        "register": register,
        "ticket_id": f"TCK-{rng.randrange(10**7):07d}",
        "priority": priority,
        "channel": choice(rng, _CHANNELS),
        "product_area": area,
    }
    return Row("ticket", spec.name, [["user", user], ["assistant", reply]], meta)


_BUILDERS = {"qa": _qa, "conversation": _conversation, "ticket": _ticket}


def clean_rows(n: int, kinds: dict[str, float], rng: random.Random) -> tuple[list[Row], set[bytes]]:
    """`n` defect-free rows; exact (normalized) repeats are re-drawn so duplicates are only the injected ones."""
    intents = list(INTENTS)
    intent_cum = list(accumulate(INTENT_SPECS[i].weight for i in intents))
    kind_names = sorted(kinds)
    kind_cum = list(accumulate(kinds[k] for k in kind_names))
    reg_cum = list(accumulate(REGISTER_WEIGHTS))
    seen: set[bytes] = set()
    rows: list[Row] = []
    for _ in range(n):
        for _attempt in range(20):
            spec = INTENT_SPECS[rng.choices(intents, cum_weights=intent_cum)[0]]
            kind = rng.choices(kind_names, cum_weights=kind_cum)[0]
            register = rng.choices(REGISTERS, cum_weights=reg_cum)[0]
            row = _BUILDERS[kind](spec, register, rng)
            key = row.key()
            if key not in seen:
                break
        else:  # content space exhausted for this draw (tiny catalogs only): make it unique
            row.messages[0][1] += f" (ref {len(rows)})"
            key = row.key()
        seen.add(key)
        rows.append(row)
    return rows, seen
