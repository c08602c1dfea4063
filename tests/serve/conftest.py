"""Serving tier: the gateway against a fake OpenAI-compatible engine (tests/serve/fake_engine.py).

    pytest tests/serve                 # everything below, ~1 min on 2 cores
    pytest tests/serve -m "not slow"   # without the real llama-server e2e and the headless-browser test

Three ways a test reaches the gateway, cheapest first:

- **in-process** (`gateway()`): gateway and fake engine are both ASGI apps joined by httpx2's
  ASGITransport; no sockets, no threads. Responses are buffered, so no disconnect tests here.
- **gateway thread** (`ServerThread`): uvicorn on 127.0.0.1:<free port> in a thread, the engine either
  in-process or a fake-engine subprocess; for streaming, disconnects and the browser test.
- **serve() subprocess** (test_server.py): the real entry point managing a fake-engine child.

Every network call goes to 127.0.0.1 and every wait is a bounded loop.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx2
import pytest

from supportlm.serve.app import build_app
from supportlm.serve.engines import Engine
from supportlm.serve.settings import ServeSettings, load_settings, merge_overrides

from .fake_engine import create_app as create_fake_engine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FAKE_ENGINE = HERE / "fake_engine.py"
KEYS = "alice:sk-alice-0123456789,bob:sk-bob-4567890123"
ALICE = {"Authorization": "Bearer sk-alice-0123456789"}
BOB = {"Authorization": "Bearer sk-bob-4567890123"}
FAKE_REPLY_16 = "Thanks for contacting support." + "".join(f" t{i}" for i in range(11))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build settings explicitly: a developer's SUPPORTLM_* env must not leak in."""
    for name in list(os.environ):
        if name.startswith("SUPPORTLM_"):
            monkeypatch.delenv(name)


def make_settings(**overrides: Any) -> ServeSettings:
    """Test settings: `load_settings` without env, these defaults, then `overrides` (nested like the model:
    `make_settings(limits={"burst": 1})` changes that key alone)."""
    base: dict[str, Any] = {
        "api_keys": KEYS,
        "log": {"stdout": False},
        "engine": {"health_interval_s": 0.2, "retry_after_s": 2},
        "limits": {
            "burst": 1000,
            "rate_per_s": 1000.0,
            "default_max_tokens": 16,
            "refusal_delay_s": 0.0,  # refusals answered at once (test_hardening tests the delay)
        },
    }
    return load_settings(env={}, **merge_overrides(base, overrides))


def chat_body(content: str = "Where is my order?", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


@contextlib.asynccontextmanager
async def gateway(
    settings: ServeSettings | None = None,
    *,
    kind: str = "llamacpp",
    fake: Any = None,
    engine_model: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    engine_timeout_s: float = 10.0,
) -> AsyncIterator[httpx2.AsyncClient]:
    """In-process gateway over an in-process fake engine. The client carries `.app`, `.fake`, `.engine`."""
    fake = fake or create_fake_engine(kind=kind)
    engine = Engine(
        "http://fake-engine",
        kind=kind,
        model=engine_model,
        timeout_s=engine_timeout_s,
        transport=httpx2.ASGITransport(fake),
    )
    app = build_app(settings or make_settings(), engine, clock=clock)
    await app.state.gateway.monitor.check()  # the monitor's first probe (no lifespan in-process)
    transport = httpx2.ASGITransport(app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
        client.app = app  # type: ignore[attr-defined]
        client.fake = fake  # type: ignore[attr-defined]
        client.engine = engine  # type: ignore[attr-defined]
        yield client
    await engine.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (httpx2.HTTPError, OSError):
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<port> in a daemon thread (lifespan on: the engine monitor runs)."""

    def __init__(self, app: Any, port: int | None = None, settings: ServeSettings | None = None) -> None:
        """`settings`: run serve()'s own uvicorn configuration (connection limit, keep-alive) on this port."""
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if settings is not None:
            from supportlm.serve.server import _uvicorn_server

            self.server = _uvicorn_server(
                app, settings.model_copy(update={"host": "127.0.0.1", "port": self.port})
            )
        else:
            config = uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=2,
            )
            self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        wait_until(lambda: self.server.started, 15, what="gateway thread to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class FakeEngineProcess:
    """The fake engine as a real process on a real port: it can be killed and restarted."""

    def __init__(self, port: int | None = None, *args: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> FakeEngineProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE_ENGINE), "--port", str(self.port), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: httpx2.get(f"{self.url}/health", timeout=1).status_code == 200,
            20,
            what="fake engine to start",
        )
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def stats(self) -> dict[str, Any]:
        return httpx2.get(f"{self.url}/_stats", timeout=2).json()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


@pytest.fixture
def fake_engine_proc() -> Iterator[FakeEngineProcess]:
    with FakeEngineProcess() as proc:
        yield proc


class FakeClock:
    """Monotonic clock the test moves by hand (rate-limit tests are exact)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def parse_sse(text: str) -> list[str]:
    """`data:` payloads of an SSE body; asserts the wire format (each event = one data line + blank line)."""
    assert text.endswith("\n\n"), f"SSE body must end with a blank line: {text[-80:]!r}"
    events = text[:-2].split("\n\n")
    out = []
    for ev in events:
        assert ev.startswith("data: "), f"every event is one `data: ` line, got {ev[:80]!r}"
        assert "\n" not in ev, f"one line per event, got {ev[:80]!r}"
        out.append(ev[len("data: ") :])
    return out
