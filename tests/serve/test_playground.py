"""The playground page end to end in headless Chromium, driven over the Chrome DevTools protocol (a pipe,
no extra package): type a question, watch the reply stream in, press Stop (the engine sees the
cancellation), then see 401 and 429 explained; no console errors, no request leaves the gateway's
origin. Skipped when Chromium is not installed (CI: apt-get install -y chromium).

Set SUPPORTLM_SCREENSHOT=/path/shot.png to keep the final screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supportlm.serve.app import build_app
from supportlm.serve.engines import Engine

from .conftest import FakeClock, FakeEngineProcess, ServerThread, make_settings, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SCREENSHOT = os.environ.get("SUPPORTLM_SCREENSHOT")  # read at import: the autouse fixture clears SUPPORTLM_*
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"
)


class CDP:
    """Minimal Chrome DevTools protocol client over `--remote-debugging-pipe` (fds 3/4, NUL-terminated JSON):
    no websocket library, no TCP port. Commands go to one page session; events are kept for inspection."""

    def __init__(self, to_browser: int, from_browser: int) -> None:
        self.wfd, self.rfd = to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                raise TimeoutError("no message from chromium")
            chunk = os.read(self.rfd, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, *, browser: bool = False, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session and not browser:
            msg["sessionId"] = self.session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 15
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open_page(self) -> None:
        target = self.send("Target.createTarget", browser=True, url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", browser=True, targetId=target, flatten=True)[
            "sessionId"
        ]

    def js(self, expr: str) -> Any:
        out = self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(out["exceptionDetails"])
        return out["result"].get("value")

    def wait_js(self, expr: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expr)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expr}")

    def errors(self, *, network: bool) -> list[str]:
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(str(p["exceptionDetails"].get("exception", {}).get("description")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value")) for a in p.get("args", [])))
            elif (
                m == "Log.entryAdded"
                and p["entry"]["level"] == "error"
                and (network or p["entry"].get("source") != "network")
            ):
                out.append(p["entry"]["text"])
        return out


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[CDP]:
    to_r, to_w = os.pipe()  # we write commands -> chromium reads its fd 3
    from_r, from_w = os.pipe()  # chromium writes its fd 4 -> we read
    args = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--remote-debugging-pipe",
        "--window-size=1000,760", "about:blank",
    ]  # fmt: skip
    # posix_spawn, not Popen(preexec_fn=...): wiring fds 3/4 needs no Python code in the forked child
    pid = os.posix_spawn(
        args[0],
        args,
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, to_r, 3),
            (os.POSIX_SPAWN_DUP2, from_w, 4),
        ],
    )
    os.close(to_r)
    os.close(from_w)
    cdp = CDP(to_w, from_r)
    try:
        cdp.open_page()
        for domain in ("Runtime", "Log", "Page", "Network"):
            cdp.send(f"{domain}.enable")
        yield cdp
    finally:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            cdp.send("Browser.close", browser=True)
        os.close(to_w)
        os.close(from_r)
        deadline = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)


def test_playground_streams_a_reply_and_explains_errors(browser: CDP, tmp_path: Path) -> None:
    fake = FakeEngineProcess(None, "--token-delay", "0.01")  # a real process: real streaming
    engine = Engine(fake.url)
    app = build_app(make_settings(limits={"burst": 3, "rate_per_s": 0.01}), engine, clock=FakeClock())
    with fake, ServerThread(app) as gw:
        browser.send("Page.navigate", url=f"{gw.url}/playground")
        browser.wait_js(
            "document.readyState === 'complete' && document.getElementById('status').className === 'ready'"
        )
        assert "model supportlm" in browser.js("document.getElementById('status').textContent")

        def ask(question: str, key: str) -> None:
            browser.js(
                "document.getElementById('api-key').value = ''; document.getElementById('api-key').focus()"
            )
            browser.send("Input.insertText", text=key)
            browser.js("document.getElementById('prompt').focus()")
            browser.send("Input.insertText", text=question)
            browser.send(
                "Input.dispatchKeyEvent",
                type="keyDown",
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                nativeVirtualKeyCode=13,
            )
            browser.send(
                "Input.dispatchKeyEvent",
                type="keyUp",
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                nativeVirtualKeyCode=13,
            )

        # 1. a question; the reply streams in (we catch it half-written), then completes
        ask("How do I track my order?", "sk-alice-0123456789")
        partial = browser.wait_js(
            "(() => { const m = document.querySelector('.msg.assistant.streaming'); "
            "return m && m.textContent.length > 0 && m.textContent; })()",
            10,
        )
        assert "Thanks" in partial
        browser.wait_js("document.body.dataset.state === 'done'", 15)
        reply = browser.js("document.querySelector('.msg.assistant').firstChild.textContent")
        assert (
            reply == "Thanks for contacting support. t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 t10 t11 t12 t13 t14 t15"
            " t16 t17 t18 t19 t20 t21 t22 t23 t24 t25 t26 t27 t28 t29 t30 t31 t32 t33 t34 t35 t36 t37 t38 t39"
            " t40 t41 t42 t43 t44 t45 t46 t47 t48 t49 t50 t51 t52 t53 t54 t55 t56 t57 t58 t59 t60 t61 t62 t63"
            " t64 t65 t66 t67 t68 t69 t70 t71 t72 t73 t74 t75 t76 t77 t78 t79 t80 t81 t82 t83 t84 t85 t86 t87"
            " t88 t89 t90 t91 t92 t93 t94 t95 t96 t97 t98 t99 t100 t101 t102 t103 t104 t105 t106 t107 t108 t109"
            " t110 t111 t112 t113 t114 t115 t116 t117 t118 t119 t120 t121 t122 t123 t124 t125 t126 t127 t128"
            " t129 t130 t131 t132 t133 t134 t135 t136 t137 t138 t139 t140 t141 t142 t143 t144 t145 t146 t147"
            " t148 t149 t150 t151 t152 t153 t154 t155 t156 t157 t158 t159 t160 t161 t162 t163 t164 t165 t166"
            " t167 t168 t169 t170 t171 t172 t173 t174 t175 t176 t177 t178 t179 t180 t181 t182 t183 t184 t185"
            " t186 t187 t188 t189 t190 t191 t192 t193 t194"
        )  # max_tokens 200 from the page
        assert "first token" in browser.js("document.querySelector('.msg.assistant .meta').textContent")
        assert browser.errors(network=True) == []  # a clean happy path: no JS or network errors at all
        sent = fake.stats()["last_body"]
        assert sent["messages"] == [{"role": "user", "content": "How do I track my order?"}]
        assert sent["max_tokens"] == 200 and sent["temperature"] == 0.7

        # 2. a wrong key: a readable 401, no half-made bubble
        ask("Hello?", "sk-wrong")
        browser.wait_js("document.body.dataset.state === 'error'", 10)
        error = browser.js("document.getElementById('error').textContent")
        assert error.startswith("401 Unauthorized: Invalid API key") and "Check the API key" in error
        assert browser.js("document.querySelectorAll('.msg.assistant').length") == 1

        # 3. Stop mid-stream: the fetch is aborted, the gateway cancels the engine request
        ask("__slow__ tell me everything", "sk-alice-0123456789")  # 0.2 s per token
        browser.wait_js("document.querySelector('.msg.assistant.streaming')?.textContent.length > 0", 10)
        browser.js("document.getElementById('stop').click()")
        browser.wait_js("document.body.dataset.state === 'done'", 5)
        assert browser.js("document.querySelectorAll('.msg.assistant')[1].textContent").endswith("[stopped]")
        wait_until(lambda: fake.stats()["cancelled"] == 1, 5, what="the engine to see the cancellation")

        # 4. next turn carries the history; then the 3-request burst is spent: a readable 429
        ask("And a refund?", "sk-alice-0123456789")
        browser.wait_js("document.body.dataset.state === 'done'", 15)
        assert [m["role"] for m in fake.stats()["last_body"]["messages"]] == ["user", "assistant"] * 2 + [
            "user"
        ]
        ask("One more?", "sk-alice-0123456789")
        browser.wait_js("document.body.dataset.state === 'error'", 10)
        error = browser.js("document.getElementById('error').textContent")
        assert error.startswith("429 Rate limited:") and error.endswith("retry in 100 s")

        shot = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "playground.png").write_bytes(shot)
        if SCREENSHOT:
            Path(SCREENSHOT).write_bytes(shot)

    # the expected 401/429 show up as network errors only; never a JS error
    assert browser.errors(network=False) == []
    urls = [
        ev["params"]["request"]["url"]
        for ev in browser.events
        if ev.get("method") == "Network.requestWillBeSent"
    ]
    assert urls and all(u.startswith((gw.url, "data:")) for u in urls), urls
