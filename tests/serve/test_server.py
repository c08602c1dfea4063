"""serve(): the engine command and the real process lifecycle (start, supervise, drain); settings: test_settings.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from supportlm.serve.server import engine_command
from supportlm.serve.settings import load_settings

from .conftest import ALICE, FAKE_ENGINE, KEYS, ROOT, chat_body, free_port, wait_until


def test_llama_server_command(tmp_path: Path) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    s = load_settings(
        env={},
        llama={
            "server_bin": binary,
            "parallel": 8,
            "ctx_size": 1024,
            "threads": 2,
            "batch_size": 256,
            "ubatch_size": 128,
            "extra_args": ["--flash-attn", "auto"],
        },
    )
    cmd = engine_command(s, Path("/models/m.gguf"))
    assert cmd[0] == str(binary)
    joined = " ".join(cmd)
    for part in (
        "--model /models/m.gguf",
        "--parallel 8",
        "--ctx-size 8192",
        "--cont-batching",
        "--threads 2",
        "--batch-size 256",
        "--ubatch-size 128",
        "--port 8081",
        "--alias supportlm",
        "--flash-attn auto",
    ):
        assert part in joined
    custom = load_settings(
        env={}, engine={"cmd": "vllm serve {model} --port {port} --max-num-seqs {parallel}", "port": 9}
    )
    assert engine_command(custom, Path("m")) == ["vllm", "serve", "m", "--port", "9", "--max-num-seqs", "4"]


def test_serve_refuses_to_start_without_keys() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "supportlm.serve.server"],
        env={**_base_env(), "SUPPORTLM_ENGINE_URL": "http://127.0.0.1:9"},
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "no API keys configured" in proc.stderr


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTLM_")} | {"PYTHONUNBUFFERED": "1"}


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(x) for x in text]
    return out


def test_serve_supervises_the_engine_and_drains_on_sigterm(tmp_path: Path) -> None:
    port, engine_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = _base_env() | {
        "SUPPORTLM_PORT": str(port),
        "SUPPORTLM_ENGINE_PORT": str(engine_port),
        "SUPPORTLM_ENGINE_CMD": f"{sys.executable} {FAKE_ENGINE} --port {{port}}",
        "SUPPORTLM_API_KEYS": KEYS,
        "SUPPORTLM_ENGINE_HEALTH_INTERVAL_S": "0.2",
        "SUPPORTLM_ENGINE_RESTART_BACKOFF_S": "0.2",
        "SUPPORTLM_DRAIN_TIMEOUT_S": "20",
        "SUPPORTLM_LOG_FILE": str(tmp_path / "requests.jsonl"),
        "SUPPORTLM_LOG_STDOUT": "false",
        "SUPPORTLM_MODEL_PATH": str(tmp_path / "no-such-model.gguf"),  # whatever the workspace holds: bundled
    }
    stderr = (tmp_path / "stderr.txt").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "supportlm.serve.server"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        wait_until(
            lambda: httpx2.get(f"{url}/readyz", timeout=2).status_code == 200, 60, 0.2, "serve() to be ready"
        )
        # /readyz names nothing internal; which model is served is in the server log
        assert httpx2.get(f"{url}/readyz").json() == {"status": "ready", "model": "supportlm"}
        assert "serving bundled model" in (tmp_path / "stderr.txt").read_text()

        # the engine dies: 503 + Retry-After, then the supervisor brings it back
        (engine_pid,) = _children(server.pid)
        os.kill(engine_pid, signal.SIGKILL)
        wait_until(lambda: httpx2.get(f"{url}/readyz", timeout=2).status_code == 503, 5, what="readyz 503")
        r = httpx2.post(f"{url}/v1/chat/completions", json=chat_body(), headers=ALICE, timeout=10)
        assert r.status_code == 503 and "retry-after" in r.headers
        wait_until(
            lambda: httpx2.get(f"{url}/readyz", timeout=2).status_code == 200, 30, 0.2, "engine restart"
        )
        (new_engine_pid,) = _children(server.pid)
        assert new_engine_pid != engine_pid

        # SIGTERM while a slow stream is in flight: it finishes, then both processes exit
        with httpx2.stream(
            "POST",
            f"{url}/v1/chat/completions",
            headers=ALICE,
            timeout=30,
            json=chat_body("__slow__", stream=True, max_tokens=8),
        ) as resp:  # 8 x 0.2 s
            lines = resp.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert first
            t0 = time.monotonic()
            server.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]" and len(rest) >= 8  # every token arrived
        assert server.wait(30) == 0
        assert time.monotonic() - t0 < 25
        assert not Path(f"/proc/{new_engine_pid}").exists() or _zombie(new_engine_pid)
        log = (tmp_path / "stderr.txt").read_text()
        assert "killed by SIGKILL" in log and "restart 1 of at most 5" in log
        assert "draining" in log and "stopping engine" in log
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        stderr.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_engine_that_dies_of_sigill_at_start_is_a_clear_error(tmp_path: Path) -> None:
    flag = tmp_path / "crash"
    flag.touch()
    env = _base_env() | {
        "SUPPORTLM_PORT": str(free_port()),
        "SUPPORTLM_ENGINE_PORT": str(free_port()),
        "SUPPORTLM_ENGINE_CMD": f"{sys.executable} {FAKE_ENGINE} --port {{port}} --sigill-at-start-if {flag}",
        "SUPPORTLM_API_KEYS": KEYS,
    }
    proc = subprocess.run([sys.executable, "-m", "supportlm.serve.server"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 5
    assert (
        "killed by SIGILL (illegal instruction: the build uses CPU instructions this machine cannot run)"
        in (proc.stderr)
    )
    assert "Fix: rebuild for this CPU with `make llama-tools`" in proc.stderr


def test_supervisor_gives_up_on_a_crash_loop_and_readyz_says_engine_down(tmp_path: Path) -> None:
    """The engine dies of SIGILL on a request, then at every restart: a bounded number of restarts with
    backoff, then no more; /readyz answers a stable code without the crash details."""
    port, flag = free_port(), tmp_path / "crash"
    url = f"http://127.0.0.1:{port}"
    env = _base_env() | {
        "SUPPORTLM_PORT": str(port),
        "SUPPORTLM_ENGINE_PORT": str(free_port()),
        "SUPPORTLM_ENGINE_CMD": f"{sys.executable} {FAKE_ENGINE} --port {{port}} --sigill-at-start-if {flag}",
        "SUPPORTLM_API_KEYS": KEYS,
        "SUPPORTLM_ENGINE_HEALTH_INTERVAL_S": "0.2",
        "SUPPORTLM_ENGINE_RESTART_BACKOFF_S": "0.1",
        "SUPPORTLM_ENGINE_MAX_RESTARTS": "3",
        "SUPPORTLM_LOG_STDOUT": "false",
    }
    stderr = (tmp_path / "stderr.txt").open("w")
    server = subprocess.Popen([sys.executable, "-m", "supportlm.serve.server"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    try:
        wait_until(
            lambda: httpx2.get(f"{url}/readyz", timeout=2).status_code == 200, 60, 0.2, "serve() to be ready"
        )
        flag.touch()  # from now on every start dies
        r = httpx2.post(f"{url}/v1/chat/completions", json=chat_body("__sigill__"), headers=ALICE, timeout=10)
        assert r.status_code in (502, 503)
        wait_until(lambda: httpx2.get(f"{url}/readyz", timeout=2).json()["error"].get("code") == "engine_down",
                   60, 0.2, "the supervisor to give up")  # fmt: skip
        body = httpx2.get(f"{url}/readyz", timeout=2)
        assert body.status_code == 503
        assert "SIGILL" not in body.text and "illegal" not in body.text  # details stay in the log
        assert server.poll() is None  # the gateway keeps answering
        time.sleep(1.0)
        log = (tmp_path / "stderr.txt").read_text()
        assert log.count("restart 1 of at most 3") == 1 and "restart 3 of at most 3" in log
        assert "restart 4 of" not in log
        assert "killed by SIGILL" in log and "not restarting it" in log and "make llama-tools" in log
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        stderr.close()
