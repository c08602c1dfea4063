"""Gateway errors: one table maps each error class to its HTTP status, OpenAI `type` and metric label.

Every error body is `{"error": {"message", "type", "param", "code"}}` (OpenAI's shape, as vLLM);
messages follow TGI's form: "`temperature` must be >= 0.0 and <= 2.0. Given: 3.5".

| class              | status | type                   | supportlm_request_failure{err} |
|--------------------|--------|------------------------|--------------------------------|
| InvalidRequest     | 422    | invalid_request_error  | validation                     |
| Unauthorized       | 401    | authentication_error   | auth                           |
| ModelNotFound      | 404    | not_found_error        | validation                     |
| PayloadTooLarge    | 413    | request_too_large      | too_large                      |
| RateLimited        | 429    | rate_limit_error       | rate_limit                     |
| Overloaded         | 503    | overloaded_error       | overloaded                     |
| EngineUnavailable  | 503    | engine_unavailable     | engine                         |
| EngineFailure      | 503    | engine_error           | engine                         |
| EngineTimeout      | 504    | timeout_error          | timeout                        |
| (anything else)    | 500    | internal_error         | internal                       |

429 and 503 carry `Retry-After` (whole seconds). Pydantic errors become 422 through
`validation_error()`, which builds the message from `exc.errors()` (never `str(exc)`: it leaks
file paths), caps it at 10 errors and echoes at most 200 characters of any input (vLLM measured
a 4.5 KB request producing a 23.6 MB error otherwise).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from supportlm.errors import SupportLMError

MAX_ERRORS = 10  # pydantic errors listed in one message
MAX_ECHO = 200  # characters of a client's input echoed back
MAX_MESSAGE = 2000  # characters of the whole message


class ServeError(SupportLMError):
    """Base of every error the gateway answers with; status and type come from ERROR_TABLE."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after


class InvalidRequest(ServeError):
    """The body is malformed, a field is out of range, or the engine rejected the input."""


class Unauthorized(ServeError):
    """Missing or unknown API key."""


class ModelNotFound(ServeError):
    """`model` names something this gateway does not serve."""


class PayloadTooLarge(ServeError):
    """Body over limits.max_body_bytes."""


class RateLimited(ServeError):
    """The key's token bucket is empty."""


class Overloaded(ServeError):
    """Concurrency and queue are full, or the queue wait timed out (or the engine said so)."""


class EngineUnavailable(ServeError):
    """The engine is down, restarting or not loaded yet."""


class EngineFailure(ServeError):
    """The engine answered with an error or something that is not OpenAI-compatible."""


class EngineTimeout(ServeError):
    """The engine did not answer within serve.engine.timeout_s."""


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    type: str
    err: str  # label of supportlm_request_failure


ERROR_TABLE: dict[type[ServeError], ErrorSpec] = {
    InvalidRequest: ErrorSpec(422, "invalid_request_error", "validation"),
    Unauthorized: ErrorSpec(401, "authentication_error", "auth"),
    ModelNotFound: ErrorSpec(404, "not_found_error", "validation"),
    PayloadTooLarge: ErrorSpec(413, "request_too_large", "too_large"),
    RateLimited: ErrorSpec(429, "rate_limit_error", "rate_limit"),
    Overloaded: ErrorSpec(503, "overloaded_error", "overloaded"),
    EngineUnavailable: ErrorSpec(503, "engine_unavailable", "engine"),
    EngineFailure: ErrorSpec(503, "engine_error", "engine"),
    EngineTimeout: ErrorSpec(504, "timeout_error", "timeout"),
}
INTERNAL = ErrorSpec(500, "internal_error", "internal")

# Starlette's own HTTPExceptions (unknown route, wrong method, body parse failures)
HTTP_STATUS_SPECS: dict[int, ErrorSpec] = {
    400: ErrorSpec(422, "invalid_request_error", "validation"),  # body could not be parsed: same as bad JSON
    404: ErrorSpec(404, "not_found_error", "not_found"),
    405: ErrorSpec(405, "invalid_request_error", "not_found"),
    413: ERROR_TABLE[PayloadTooLarge],
}


def spec_for(exc: BaseException) -> ErrorSpec:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]  # type: ignore[index]
    return INTERNAL


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": _cap(message, MAX_MESSAGE), "type": type_, "param": param, "code": code}}


def retry_after_header(seconds: float) -> int:
    """The Retry-After value for a wait of `seconds`: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def error_response(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs["Retry-After"] = str(retry_after_header(retry_after))
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=hdrs)


def serve_error_response(exc: ServeError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    spec = spec_for(exc)
    return error_response(
        spec.status,
        exc.message,
        spec.type,
        param=exc.param,
        code=exc.code,
        retry_after=exc.retry_after,
        headers=headers,
    )


# ---------------------------------------------------------------- pydantic -> 422


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _echo(value: Any) -> str:
    """A client's input, shortened: at most MAX_ECHO characters, never a whole prompt."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[: MAX_ECHO + 1]).decode("utf-8", "backslash-replace")
    if isinstance(value, str):
        return repr(_cap(value, MAX_ECHO))
    try:
        text = json.dumps(value, ensure_ascii=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return _cap(text, MAX_ECHO)


def error_param(loc: Sequence[Any]) -> str | None:
    """Dotted field path without the request part ('body') or pydantic's internal tags."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "header", "path", "cookie"):
        parts = parts[1:]
    parts = [p for p in parts if not p.startswith(("function-", "tagged-union[", "constrained-"))]
    return ".".join(parts) or None


def _one_message(err: Mapping[str, Any]) -> tuple[str | None, str]:
    kind = err.get("type", "")
    loc = tuple(err.get("loc", ()))
    ctx = err.get("ctx") or {}
    if kind == "json_invalid":
        pos = loc[1] if len(loc) > 1 else "?"
        return None, f"Body is not valid JSON: {ctx.get('error', 'decode error')} (character {pos})"
    param = error_param(loc)
    name = param or "body"
    msg = str(err.get("msg", "invalid value"))
    given = err.get("input")
    if kind == "missing":
        return param, f"`{name}` is required"
    if kind == "extra_forbidden":
        return param, f"`{name}` is not a recognised field"
    if param is None and isinstance(given, (bytes, bytearray)):
        return None, "Body must be JSON with `Content-Type: application/json`"
    if kind == "value_error" and msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith("`"):  # our validators already name the field and the value (TGI style)
        return param, msg
    return param, f"`{name}`: {msg}. Given: {_echo(given)}"


def validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """(message, param of the first error) for a list of pydantic/FastAPI errors."""
    parts: list[str] = []
    first_param: str | None = None
    for i, err in enumerate(errors[:MAX_ERRORS]):
        param, msg = _one_message(err)
        if i == 0:
            first_param = param
        parts.append(msg)
    if len(errors) > MAX_ERRORS:
        parts.append(f"(and {len(errors) - MAX_ERRORS} more)")
    return _cap("; ".join(parts), MAX_MESSAGE), first_param
