"""The one Record schema every source yields, and the Bitext taxonomy.

Every loader (synthetic, Bitext CSV, generic JSONL/CSV, HF datasets) turns its rows
into `Record`s, so clean/split/quality/train never care where a row came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from supportlm.errors import DataError
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


def _line_number(path: Path, k: int) -> int:
    """The file line of the k-th (1-based) non-blank line: how read_jsonl numbers the rows it yields."""
    seen = 0
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                seen += 1
                if seen == k:
                    return n
    return 0


def iter_records(path: Path, produced_by: str | None = None) -> Iterator[Record]:
    """The rows of a JSONL file as Records, one at a time (the streaming stages' reader); a bad row is a
    DataError naming file:line and the field."""
    for k, row in enumerate(read_jsonl(path, produced_by), start=1):
        try:
            yield Record.model_validate(row)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "(row)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            rerun = f"; rerun `dvc repro {produced_by}`" if produced_by else ""
            raise DataError(f"{path}:{_line_number(path, k)}: `{loc}`: {err['msg']}{more}{rerun}") from None
