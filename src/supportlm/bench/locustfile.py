"""Locust users for the bench stage: realistic support prompts, streaming and non-streaming chat.

    locust -f src/supportlm/bench/locustfile.py --headless -u 4 -r 4 -t 20s \
        --host http://127.0.0.1:8000 --json-file /tmp/level StreamingUser NonStreamingUser

`supportlm.bench.locust.run_locust` starts it once per (target, concurrency) level; configuration comes from env vars
because Locust owns the command line:

- `SUPPORTLM_BENCH_PROMPTS`: JSONL, one `{"messages": [...]}` per line (the test split's conversations up
  to the last user turn); every user takes the next prompt from one shared, fixed order, so two runs at
  the same concurrency send the same prompts in the same order;
- `SUPPORTLM_BENCH_API_KEY`: bearer key for the gateway (empty = no header: llama-server directly);
- `SUPPORTLM_BENCH_MAX_TOKENS` (100), `SUPPORTLM_BENCH_TEMPERATURE` (0), `SUPPORTLM_BENCH_MODEL` (supportlm),
  `SUPPORTLM_BENCH_PATH` (/v1/chat/completions), `SUPPORTLM_BENCH_TIMEOUT_S` (300).

Users never wait between requests (closed loop: concurrency = users). What each request records in
Locust's stats (and so in `--json-file`), parsed by `supportlm.bench.locust.parse_locust_stats`:

| request_type | name          | response_time               | response_length     |
|--------------|---------------|-----------------------------|---------------------|
| POST         | chat          | whole request, ms           | completion tokens   |
| POST         | chat-stream   | until `[DONE]`, ms          | completion tokens   |
| LATENCY      | chat / chat-stream | successful requests only, ms | completion tokens |
| TTFT         | chat-stream   | until the first content, ms | 0                   |
| MS100        | chat / chat-stream | latency x 100 / completion tokens | completion tokens |
| DECODE       | chat-stream   | (until `[DONE]` - TTFT) x 100 / (tokens - 1): decode only | tokens |
| ERROR        | `HTTP 503`, `stream broke`, ... | 0 (one per failed request: the failure mix) | 0 |
| MARK         | test_start    | 0 (logged when the test starts: the run's t0) | 0       |

Locust's own timing of a `stream=True` request stops at the response headers, so the streaming user
overwrites `response_time` with the time the last event arrived. Locust keeps response times in
buckets (1 ms below 100 ms, 10 ms below 1 s, 100 ms below 10 s), so percentiles carry that resolution;
each entry's `total_response_time` is exact (means). Failures (non-200, bad JSON, no
tokens) are POST entries marked failed, with the status and the start of the body, plus one ERROR
entry per cause. A 429/503 answer's `Retry-After` is honoured (capped at 5 s) before the user's next
request, as a well-behaved client does: a closed-loop user with no wait would otherwise turn a 2-second
outage into hundreds of instant failures and measure its own hammering.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

from locust import HttpUser, constant, events, task

PROMPTS_FILE = os.environ.get("SUPPORTLM_BENCH_PROMPTS", "")
API_KEY = os.environ.get("SUPPORTLM_BENCH_API_KEY", "")
MAX_TOKENS = int(os.environ.get("SUPPORTLM_BENCH_MAX_TOKENS", "100"))
TEMPERATURE = float(os.environ.get("SUPPORTLM_BENCH_TEMPERATURE", "0"))
MODEL = os.environ.get("SUPPORTLM_BENCH_MODEL", "supportlm")
PATH = os.environ.get("SUPPORTLM_BENCH_PATH", "/v1/chat/completions")
TIMEOUT_S = float(os.environ.get("SUPPORTLM_BENCH_TIMEOUT_S", "300"))
RETRY_AFTER_MAX_S = 5.0


def load_prompts(path: str) -> list[list[dict[str, str]]]:
    if not path:
        return [[{"role": "user", "content": "My parcel arrived damaged. How do I return it and get a refund?"}]]
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line)["messages"] for line in fh if line.strip()]
    if not rows:
        raise RuntimeError(f"{path}: no prompts")
    return rows


PROMPTS = load_prompts(PROMPTS_FILE)
_ORDER = itertools.cycle(range(len(PROMPTS)))  # one process, gevent: a plain shared iterator is safe


@events.test_start.add_listener
def _mark_start(environment: Any, **_kwargs: Any) -> None:
    """Stats entries start their clock at their first logged request; this one starts with the test."""
    environment.events.request.fire(
        request_type="MARK", name="test_start", response_time=0, response_length=0, exception=None, context={}
    )


def _body(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": PROMPTS[next(_ORDER)],
        "max_tokens": MAX_TOKENS,
        "temperature": TEMPERATURE,
        "seed": 1,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


class _ChatUser(HttpUser):
    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"

    def _record(self, name: str, request_type: str, ms: float, length: int) -> None:
        self.environment.events.request.fire(
            request_type=request_type, name=name, response_time=ms, response_length=length,
            exception=None, context={},
        )  # fmt: skip

    def _failed(self, r: Any, cause: str, message: str) -> None:
        """Mark the POST failed, count its cause, and honour Retry-After (429/503) before the next request."""
        r.failure(message)
        self._record(cause, "ERROR", 0, 0)
        if r.status_code in (429, 503):
            try:
                wait = float(r.headers.get("Retry-After") or 1)
            except ValueError:
                wait = 1.0
            self._backoff = min(max(wait, 0.0), RETRY_AFTER_MAX_S)

    def _wait_backoff(self) -> None:
        wait, self._backoff = getattr(self, "_backoff", 0.0), 0.0
        if wait:
            time.sleep(wait)  # gevent-patched: only this user waits

    def plain(self) -> None:
        self._wait_backoff()
        t0 = time.perf_counter()
        with self.client.post(PATH, json=_body(False), name="chat", catch_response=True, timeout=TIMEOUT_S) as r:
            ms = (time.perf_counter() - t0) * 1000
            r.request_meta["response_length"] = 0  # tokens, set below on success (never error-body bytes)
            if r.status_code != 200:
                self._failed(r, f"HTTP {r.status_code}", f"HTTP {r.status_code}: {r.text[:200]}")
                return
            try:
                tokens = int(r.json()["usage"]["completion_tokens"])
            except (ValueError, KeyError, TypeError) as exc:
                self._failed(r, "bad body", f"bad body ({exc!r}): {r.text[:200]}")
                return
            if tokens <= 0:
                self._failed(r, "no tokens", "no completion tokens")
                return
            r.request_meta["response_length"] = tokens
            r.success()
        self._record("chat", "LATENCY", ms, tokens)
        self._record("chat", "MS100", ms * 100 / tokens, tokens)

    def streamed(self) -> None:
        self._wait_backoff()
        t0 = time.perf_counter()
        ttft: float | None = None
        usage: dict[str, Any] | None = None
        chunks = 0
        with self.client.post(
            PATH, json=_body(True), name="chat-stream", stream=True, catch_response=True, timeout=TIMEOUT_S
        ) as r:
            r.request_meta["response_length"] = 0
            if r.status_code != 200:
                r.request_meta["response_time"] = (time.perf_counter() - t0) * 1000
                self._failed(r, f"HTTP {r.status_code}", f"HTTP {r.status_code}: {r.text[:200]}")
                return
            done = False
            try:
                for line in r.iter_lines(chunk_size=None):
                    if not line.startswith(b"data: "):
                        continue
                    data = line[6:]
                    if data == b"[DONE]":
                        done = True
                        break
                    ev = json.loads(data)
                    if ev.get("usage"):
                        usage = ev["usage"]
                    for choice in ev.get("choices") or []:
                        if (choice.get("delta") or {}).get("content"):
                            chunks += 1
                            if ttft is None:
                                ttft = (time.perf_counter() - t0) * 1000
            except Exception as exc:  # noqa: BLE001 - a broken stream is a failed request, not a crash
                r.request_meta["response_time"] = (time.perf_counter() - t0) * 1000
                self._failed(r, "stream broke", f"stream broke: {exc!r}")
                return
            ms = (time.perf_counter() - t0) * 1000
            r.request_meta["response_time"] = ms
            tokens = int((usage or {}).get("completion_tokens") or chunks)  # one token per chunk without usage
            if not done or ttft is None or tokens <= 0:
                self._failed(r, "incomplete stream", f"incomplete stream (done={done}, content chunks={chunks})")
                return
            r.request_meta["response_length"] = tokens
            r.success()
        self._record("chat-stream", "LATENCY", ms, tokens)
        self._record("chat-stream", "TTFT", ttft, 0)
        self._record("chat-stream", "MS100", ms * 100 / tokens, tokens)
        if tokens > 1:  # time per output token after the first, x 100
            self._record("chat-stream", "DECODE", (ms - ttft) * 100 / (tokens - 1), tokens)


class StreamingUser(_ChatUser):
    """SSE chat: TTFT and the time until `[DONE]`."""

    @task
    def chat_stream(self) -> None:
        self.streamed()


class NonStreamingUser(_ChatUser):
    """One JSON answer per request."""

    @task
    def chat(self) -> None:
        self.plain()


class AlternatingUser(_ChatUser):
    """Streamed and plain requests in turn: the same 50/50 mix as one StreamingUser + one NonStreamingUser,
    for concurrency 1 (where Locust would otherwise spawn only one of the two classes)."""

    def on_start(self) -> None:
        super().on_start()
        self._next_stream = True

    @task
    def chat_either(self) -> None:
        stream, self._next_stream = self._next_stream, not self._next_stream
        self.streamed() if stream else self.plain()
