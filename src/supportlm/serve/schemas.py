"""The OpenAI-compatible protocol: request and response bodies (pydantic), limits baked into validators.

`request_models(settings)` builds the two request bodies with this server's limits (max_tokens, prompt
characters, messages) in their validators and JSON schema, so /openapi.json, /docs and schemathesis see
the same bounds the gateway enforces. Every validator's message names the field, the allowed range and the
value given, as TGI's do: "`temperature` must be >= 0.0 and <= 2.0. Given: 3.5".
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from supportlm.serve.settings import ServeSettings

# C0 controls except \t \n \r, DEL, and lone surrogates (valid JSON escapes, invalid text for an engine)
BAD_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def shorten(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounded(name: str, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> Any:
    """A number field whose error reads like TGI's: "`temperature` must be >= 0.0 and <= 2.0. Given: 3.5".
    The bounds also go into the JSON schema (so /docs and schemathesis see them)."""
    op = ">" if lo_open else ">="

    def check(v: float) -> float:
        ok_lo = v > lo if lo_open else v >= lo
        if not (ok_lo and v <= hi):  # NaN fails both comparisons
            raise ValueError(f"`{name}` must be {op} {lo} and <= {hi}. Given: {shorten(v)}")
        return v

    schema = {"exclusiveMinimum" if lo_open else "minimum": lo, "maximum": hi}
    return Annotated[int if integer else float, AfterValidator(check), Field(json_schema_extra=schema)]


def _text(name: str, max_chars: int) -> Any:
    """A string without control characters (except tab/newline/CR) or lone surrogates, at most max_chars."""

    def check(v: str) -> str:
        if len(v) > max_chars:
            raise ValueError(
                f"`{name}` must be at most {max_chars:,} characters. Given: {len(v):,} characters"
            )
        bad = BAD_CHARS_RE.search(v)
        if bad:
            raise ValueError(
                f"`{name}` must not contain control characters or unpaired surrogates. "
                f"Given: U+{ord(bad.group()):04X} at character {bad.start()}"
            )
        return v

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"maxLength": max_chars})]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: str = "assistant"
    content: str | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class GenerateDetails(BaseModel):
    finish_reason: str | None = None
    prompt_tokens: int
    generated_tokens: int


class GenerateResponse(BaseModel):
    generated_text: str
    model: str
    details: GenerateDetails


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    owned_by: str = "supportlm"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


def request_models(s: ServeSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """(ChatRequest, GenerateRequest) with this server's limits baked into validators and schema."""
    max_tok = s.limits.max_tokens
    MaxTokens = _bounded("max_tokens", 1, max_tok, integer=True)
    MaxNewTokens = _bounded("max_new_tokens", 1, max_tok, integer=True)
    Temperature = _bounded("temperature", 0.0, 2.0)
    TopP = _bounded("top_p", 0.0, 1.0, lo_open=True)
    Penalty = _bounded("penalty", -2.0, 2.0)
    Seed = _bounded("seed", 0, 2**32 - 1, integer=True)
    N = _bounded("n", 1, 1, integer=True)
    Content = _text("content", s.limits.max_prompt_chars)
    StopWord = _text("stop", 64)
    # a string or up to 4 strings; normalised to a list before validation so errors name `stop`, not a
    # union branch (`stop.str`), while the schema still shows both forms
    Stop = Annotated[
        list[StopWord],  # type: ignore[valid-type]
        BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
        Field(max_length=4),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "maxLength": 64},
                    {"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": 4},
                ]
            }
        ),
    ]

    class ChatMessage(_Body):
        role: Literal["system", "user", "assistant"]
        content: Content  # type: ignore[valid-type]
        name: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None

    class StreamOptions(_Body):
        include_usage: bool = False

    class ChatRequest(_Body):
        """OpenAI chat completion request (the subset a single-model support assistant needs)."""

        model: Annotated[str, Field(max_length=256)] | None = Field(
            None, description=f"`{s.model.served_name}` or omitted"
        )
        messages: list[ChatMessage] = Field(
            json_schema_extra={"minItems": 1, "maxItems": s.limits.max_messages},
            description=f"1 to {s.limits.max_messages} messages; contents together at most "
            f"{s.limits.max_prompt_chars:,} characters",
        )
        max_tokens: MaxTokens | None = None  # type: ignore[valid-type]
        max_completion_tokens: MaxTokens | None = None  # type: ignore[valid-type]
        temperature: Temperature | None = None  # type: ignore[valid-type]
        top_p: TopP | None = None  # type: ignore[valid-type]
        n: N | None = Field(None, description="must be 1")  # type: ignore[valid-type]
        stream: bool = False
        stream_options: StreamOptions | None = None
        stop: Stop | None = None  # type: ignore[valid-type]
        seed: Seed | None = None  # type: ignore[valid-type]
        presence_penalty: Penalty | None = None  # type: ignore[valid-type]
        frequency_penalty: Penalty | None = None  # type: ignore[valid-type]
        user: Annotated[str, Field(max_length=256)] | None = None
        ignore_eos: bool = Field(
            False,
            description="generate exactly `max_tokens` (vLLM's and llama-server's extension; for fixed-work "
            "benchmarks). Costs no more than any request of that `max_tokens`: the token budget charges it "
            "up front",
        )

        @field_validator("messages")
        @classmethod
        def _messages(cls, v: list[Any]) -> list[Any]:
            if not v:
                raise ValueError("`messages` must contain at least one message. Given: []")
            if len(v) > s.limits.max_messages:
                raise ValueError(
                    f"`messages` must hold at most {s.limits.max_messages} messages. Given: {len(v)}"
                )
            total = sum(len(m.content) for m in v)
            if total > s.limits.max_prompt_chars:
                raise ValueError(
                    f"`messages` contents must total at most {s.limits.max_prompt_chars:,} characters "
                    f"(~{s.limits.max_prompt_chars // 4:,} tokens). Given: {total:,} characters"
                )
            return v

        @model_validator(mode="after")
        def _one_max(self) -> ChatRequest:
            if self.max_tokens is not None and self.max_completion_tokens is not None:
                raise ValueError("give `max_tokens` or `max_completion_tokens`, not both")
            return self

    class GenerateRequest(_Body):
        """Single-turn generation (DESIGN.md: flat, TGI parameter names). The prompt is sent as the user
        message through the model's chat template, after `system` (or the server's system prompt)."""

        prompt: Content = Field(description="the customer's message")  # type: ignore[valid-type]
        system: Content | None = None  # type: ignore[valid-type]
        max_new_tokens: MaxNewTokens | None = None  # type: ignore[valid-type]
        temperature: Temperature | None = None  # type: ignore[valid-type]
        top_p: TopP | None = None  # type: ignore[valid-type]
        stop: Stop | None = None  # type: ignore[valid-type]
        seed: Seed | None = None  # type: ignore[valid-type]
        stream: bool = False

        @field_validator("prompt")
        @classmethod
        def _prompt(cls, v: str) -> str:
            if not v.strip():
                raise ValueError("`prompt` must not be empty. Given: ''")
            return v

        @model_validator(mode="after")
        def _total(self) -> GenerateRequest:
            total = len(self.prompt) + len(self.system or "")
            if total > s.limits.max_prompt_chars:
                raise ValueError(
                    f"`prompt` and `system` must total at most {s.limits.max_prompt_chars:,} characters "
                    f"(~{s.limits.max_prompt_chars // 4:,} tokens). Given: {total:,} characters"
                )
            return self

    return ChatRequest, GenerateRequest
