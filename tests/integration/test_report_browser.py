"""reports/index.html in headless Chromium: every relative link and image resolves, no console errors.

Driven over the Chrome DevTools protocol on a pipe (`--remote-debugging-pipe`: fds 3/4, NUL-terminated
JSON; no websocket library, no TCP port). Two report trees:

- `fixture`: tests/unit/test_report.py's complete fixture tree (images embedded and as relative links);
- `project`: a copy of this project's own reports/ (skipped when no stage has written JSON yet).

Skipped when Chromium is not installed (Debian: apt-get install -y chromium).
"""

from __future__ import annotations

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
from urllib.parse import unquote, urlparse

import pytest

from supportlm.config import ReportParams
from supportlm.paths import Paths
from supportlm.report.run import run_report
from tests.stage_params import project_params
from tests.unit.test_report import make_reports

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p and Path(p).exists()), None)  # fmt: skip
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)"),
]


class CDP:
    """Minimal DevTools client: commands to one page session; every event is kept in `events`."""

    def __init__(self, to_browser: int, from_browser: int) -> None:
        self.wfd, self.rfd = to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
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

    def send(self, method: str, *, browser: bool = False, timeout: float = 20, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session and not browser:
            msg["sessionId"] = self.session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def js(self, expr: str) -> Any:
        out = self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(out["exceptionDetails"])
        return out["result"].get("value")

    def wait_js(self, expr: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expr)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expr}")

    def errors(self) -> list[str]:
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(str(p["exceptionDetails"].get("exception", {}).get("description")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value")) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"{p['entry'].get('source')}: {p['entry']['text']} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed":
                out.append(f"network: {p.get('errorText')} ({p.get('type')})")
        return out


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[CDP]:
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    args = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--remote-debugging-pipe",
            "--window-size=1200,900", "about:blank"]  # fmt: skip
    # posix_spawn wires fds 3/4 without running Python in the forked child
    pid = os.posix_spawn(args[0], args, os.environ, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, to_r, 3),
        (os.POSIX_SPAWN_DUP2, from_w, 4),
    ])  # fmt: skip
    os.close(to_r)
    os.close(from_w)
    cdp = CDP(to_w, from_r)
    try:
        target = cdp.send("Target.createTarget", browser=True, url="about:blank")["targetId"]
        cdp.session = cdp.send("Target.attachToTarget", browser=True, targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            cdp.send(f"{domain}.enable")
        yield cdp
    finally:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            cdp.send("Browser.close", browser=True, timeout=5)
        os.close(to_w)
        os.close(from_r)
        deadline = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)


def _tree(kind: str, tmp_path: Path) -> Path:
    """A project root whose reports/ the test renders (never the real reports/: it writes index.*)."""
    root = tmp_path / kind
    if kind == "fixture":
        make_reports(root)
        return root
    src = ROOT / "reports"
    if not src.is_dir() or not any(src.glob("*.json")):
        pytest.skip("this project has no reports/*.json yet")
    shutil.copytree(src, root / "reports", ignore=shutil.ignore_patterns("index.md", "index.html"))
    for name in ("params.yaml", "dvc.lock"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, root / name)
    return root


LINKS_JS = """(() => ({
  hrefs: Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href]),
  images: Array.from(document.images).map(i => ({src: i.getAttribute('src').slice(0, 60), url: i.src.slice(0, 300),
                                                complete: i.complete, w: i.naturalWidth, h: i.naturalHeight})),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  h2: Array.from(document.querySelectorAll('h2')).map(e => e.textContent),
}))()"""


@pytest.mark.parametrize(("kind", "embed"), [("fixture", True), ("fixture", False), ("project", True)])
def test_index_html_links_and_images_resolve(browser: CDP, tmp_path: Path, kind: str, embed: bool) -> None:
    root = _tree(kind, tmp_path)
    out = run_report(project_params(report=ReportParams(embed_images=embed)), Paths(root=root))
    index = Path(out["index_html"]).resolve()

    browser.send("Page.navigate", url=index.as_uri())
    browser.wait_js("document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)")
    page = browser.js(LINKS_JS)

    assert page["h2"][0] == "Targets" and "Serving benchmark" in page["h2"] and page["h2"][-1] == "Lineage"
    broken = []
    for raw, resolved in page["hrefs"]:
        if raw.startswith("#"):
            if raw[1:] not in page["ids"]:
                broken.append(f"anchor {raw}")
            continue
        url = urlparse(resolved)
        assert url.scheme == "file", f"link leaves the report tree: {raw}"  # self-contained: no http(s)
        if not Path(unquote(url.path)).is_file():
            broken.append(raw)
    assert broken == [], f"broken links in {index}: {broken}"
    assert page["images"], "the report shows no plots"
    for img in page["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, f"image did not load: {img}"
        assert img["url"].startswith("data:image/png" if embed else "file://"), img
    if kind == "fixture":
        linked = {raw for raw, _ in page["hrefs"] if not raw.startswith("#")}
        assert {"bench.md", "eval.md", "quantization.md", "data_quality.html", "human_eval_sheet.csv"} <= linked
    assert browser.errors() == []
