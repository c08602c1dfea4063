"""Property-based fuzzing of every route from the app's own OpenAPI schema (schemathesis, ASGI in-process):
positive and negative examples, ~50 per operation, derandomized so CI is reproducible. The bar: never a
5xx, and every answer matches the documented status codes, content types and schemas."""

from __future__ import annotations

import httpx2
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from supportlm.serve.app import build_app
from supportlm.serve.engines import Engine

from .conftest import ALICE, make_settings
from .fake_engine import create_app as create_fake_engine

_fake = create_fake_engine()
_engine = Engine("http://fake-engine", transport=httpx2.ASGITransport(_fake))
app = build_app(make_settings(limits={"burst": 100_000, "rate_per_s": 100_000.0}), _engine)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


def not_a_server_error(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code < 500, (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    )


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_5xx_and_responses_match_the_schema(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(
        headers=ALICE,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
