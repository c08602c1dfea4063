"""The one Record schema every source yields, and the Bitext taxonomy.

Every loader (synthetic, Bitext CSV, generic JSONL/CSV, HF datasets) turns its rows
into `Record`s, so clean/split/quality/train never care where a row came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from supportlm.io import read_jsonl

Role = Literal["system", "user", "assistant"]
Kind = Literal["qa", "conversation", "ticket"]

# The Bitext customer-support taxonomy: 27 intents in 11 categories.
# Bitext's own CSVs spell three categories differently; CATEGORY_ALIASES maps them.
TAXONOMY: dict[str, tuple[str, ...]] = {
    "ACCOUNT": (
        "create_account",
        "delete_account",
        "edit_account",
        "recover_password",
        "registration_problems",
        "switch_account",
    ),
    "CANCEL": ("check_cancellation_fee",),
    "CONTACT": ("contact_customer_service", "contact_human_agent"),
    "DELIVERY": ("delivery_options", "delivery_period"),
    "FEEDBACK": ("complaint", "review"),
    "INVOICE": ("check_invoice", "get_invoice"),
    "ORDER": ("cancel_order", "change_order", "place_order", "track_order"),
    "PAYMENT": ("check_payment_methods", "payment_issue"),
    "REFUND": ("check_refund_policy", "get_refund", "track_refund"),
    "SHIPPING": ("change_shipping_address", "set_up_shipping_address"),
    "SUBSCRIPTION": ("newsletter_subscription",),
}
CATEGORY_ALIASES = {
    "CANCELLATION_FEE": "CANCEL",
    "SHIPPING_ADDRESS": "SHIPPING",
    "NEWSLETTER": "SUBSCRIPTION",
}
INTENT_TO_CATEGORY: dict[str, str] = {i: c for c, intents in TAXONOMY.items() for i in intents}
INTENTS: tuple[str, ...] = tuple(sorted(INTENT_TO_CATEGORY))
CATEGORIES: tuple[str, ...] = tuple(sorted(TAXONOMY))


def canonical_category(category: str) -> str:
    """Bitext's `SHIPPING_ADDRESS` etc. -> the canonical 11-category name."""
    upper = category.strip().upper()
    return CATEGORY_ALIASES.get(upper, upper)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str


class Record(BaseModel):
    """One training example. `messages` ends with an assistant turn for qa/ticket rows."""

    model_config = ConfigDict(extra="forbid")
    id: str
    source: str
    kind: Kind
    messages: list[Message]
    intent: str
    category: str
    meta: dict[str, Any] = Field(default_factory=dict)

    def text(self, roles: Iterable[str] = ("user", "assistant")) -> str:
        """All turns of the given roles joined: what dedup and quality look at."""
        wanted = set(roles)
        return "\n".join(m.content for m in self.messages if m.role in wanted)


def read_records(path: Path, produced_by: str | None = None) -> list[Record]:
    """The rows of a JSONL file as validated Records (a bad row names its field)."""
    return [Record.model_validate(row) for row in read_jsonl(path, produced_by)]
