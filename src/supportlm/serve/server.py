"""Process management: start the engine (llama-server by default) as a child, wait until it answers,
run the gateway (uvicorn), restart the engine with backoff if it dies, and shut both down gracefully.

    python -m supportlm.serve.server          # same as `supportlm serve` / `make serve`
    SUPPORTLM_API_KEYS=dev:sk-dev-1234567890abcdef SUPPORTLM_LLAMA_PARALLEL=8 python -m supportlm.serve.server

Lifecycle of `serve(settings)`:

1. resolve the GGUF (settings.model.path, else the bundled SmolLM2 base model; logged and in /readyz);
2. start the engine child (`llama-server --parallel N --cont-batching ...`, or settings.engine.cmd) in
   its own session, so a terminal's Ctrl-C reaches only us and the engine keeps serving during the drain;
   on Linux it also gets SIGTERM if we die (PR_SET_PDEATHSIG), so it is never orphaned;
3. wait (bounded by engine.start_timeout_s) until its health probe answers; if it exits first, fail
   with the last lines it printed;
4. run uvicorn; a supervisor task restarts the engine when it exits unexpectedly (backoff doubling
   from engine.restart_backoff_s to engine.restart_backoff_max_s, reset after a minute of health);
   meanwhile /readyz and /v1 requests answer 503 + Retry-After, and recover on their own. After
   engine.max_restarts consecutive restarts that died within a minute (an engine that crashes the
   same way every time, e.g. SIGILL), it stops: the log says how it died and the fix, /readyz
   answers 503 `engine_down`;
5. SIGTERM/SIGINT: uvicorn stops accepting, in-flight requests (streams included) get
   drain_timeout_s to finish, then the engine gets SIGTERM (SIGKILL after 10 s). A second SIGINT
   forces the exit.

With engine.url set and no engine.cmd (TGI/vLLM you run yourself), steps 2-4's process part is skipped:
the gateway only probes the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shlex
import signal
import sys
import time
from collections import deque
from collections.abc import Coroutine, Generator
from pathlib import Path
from typing import Any

from supportlm.errors import ConfigError, MissingDependencyError, SupportLMError
from supportlm.paths import LOOKUP_CACHE
from supportlm.runtime import describe_exit, signal_fix
from supportlm.serve.engines import Engine, engine_from_settings, redact_url
from supportlm.serve.logging import JsonFormatter
from supportlm.serve.settings import ServeSettings, default_threads, load_settings, resolve_model

log = logging.getLogger("supportlm.serve")

STOP_GRACE_S = 10.0  # engine: SIGTERM, then SIGKILL after this
HEALTHY_RESET_S = 60.0  # engine up this long -> restart backoff back to its start value


class EngineStartError(SupportLMError):
    """The engine process exited or never answered its health probe."""

    exit_code = 5


# ---------------------------------------------------------------- engine command


def llama_server_binary(settings: ServeSettings) -> Path:
    """settings.llama.server_bin, else supportlm.llamacpp.tool("llama-server") (built once from the
    llama-cpp-python sdist into ~/.cache; the first call can take ~10 minutes on 2 cores)."""
    binary = settings.llama.server_bin
    if binary is not None:
        if not binary.is_file():
            raise ConfigError(f"serve.llama.server_bin (SUPPORTLM_LLAMA_SERVER_BIN) not found: {binary}")
        return binary
    try:
        from supportlm.llamacpp import tool  # lazy: another module, and building it is slow
    except ImportError as exc:
        raise MissingDependencyError(
            f"llama-server is needed for serve.engine.kind=llamacpp but supportlm.llamacpp is unavailable ({exc}); "
            "set SUPPORTLM_LLAMA_SERVER_BIN to a llama-server binary or SUPPORTLM_ENGINE_URL to a running engine"
        ) from None
    log.info("locating llama-server (built from the llama-cpp-python sdist on first use; can take minutes)")
    return Path(tool("llama-server"))


def engine_command(settings: ServeSettings, model_path: Path) -> list[str]:
    engine, llama = settings.engine, settings.llama
    threads = llama.threads or default_threads()
    if engine.cmd:
        fill = {
            "host": engine.host,
            "port": engine.port,
            "model": str(model_path),
            "ctx": llama.ctx_size,
            "parallel": llama.parallel,
            "threads": threads,
        }
        return [part.format(**fill) for part in shlex.split(engine.cmd)]
    if engine.kind != "llamacpp":  # ServeEngineParams refuses this; a guard for hand-built settings
        raise ConfigError(
            f"serve.engine.kind={engine.kind} cannot be started by default: "
            "set serve.engine.url or serve.engine.cmd"
        )
    return [
        str(llama_server_binary(settings)),
        "--model",
        str(model_path),
        "--host",
        engine.host,
        "--port",
        str(engine.port),
        "--alias",
        settings.model.served_name,
        "--threads",
        str(threads),
        # -c is the whole KV cache, shared by the slots: each slot gets ctx_size tokens
        "--ctx-size",
        str(llama.ctx_size * llama.parallel),
        "--parallel",
        str(llama.parallel),
        "--cont-batching",  # new sequences join the running batch between decode steps
        "--batch-size",
        str(llama.batch_size),
        "--ubatch-size",
        str(llama.ubatch_size),
        "--metrics",  # llama-server's own Prometheus endpoint, for the engine dashboard
        *lookup_args(llama.lookup_cache, model_path),
        *llama.extra_args,
    ]


def lookup_args(enabled: bool, model_path: Path) -> list[str]:
    """`--spec-type ngram-cache --lookup-cache-static <model dir>/lookup-static.bin` when serve.llama.lookup_cache
    is on and the cache is there (the bundled fallback model has none: served without, and the log says so)."""
    if not enabled:
        return []
    cache = Path(model_path).parent / LOOKUP_CACHE
    if not cache.is_file():
        log.warning("serve.llama.lookup_cache is on but %s is missing (run `dvc repro quantize`); no lookup drafts",
                    cache)  # fmt: skip
        return []
    return ["--spec-type", "ngram-cache", "--lookup-cache-static", str(cache)]


# ---------------------------------------------------------------- the engine child


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EngineProcess:
    """One engine child: start, wait until healthy, restart on crash (supervise), stop."""

    def __init__(
        self,
        cmd: list[str],
        engine: Engine,
        *,
        start_timeout_s: float = 180.0,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_restarts: int = 5,
    ) -> None:
        self.cmd = cmd
        self.engine = engine
        self.start_timeout_s = start_timeout_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.proc: asyncio.subprocess.Process | None = None
        self.max_restarts = max_restarts
        self.restarts = 0
        self.failures = 0  # consecutive exits within HEALTHY_RESET_S of a start
        self.gave_up = False
        self.tail: deque[str] = deque(maxlen=40)  # the child's last output lines, for error messages
        self._stopping = False
        self._pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self) -> None:
        log.info("starting engine: %s", shlex.join(redact_args(self.cmd)))
        self.tail.clear()
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self._pump = asyncio.create_task(self._forward_output(self.proc), name="engine-output")

    async def _forward_output(self, proc: asyncio.subprocess.Process) -> None:
        """Engine output -> our stderr (prefixed), and the last lines kept for diagnostics."""
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            self.tail.append(text)
            sys.stderr.write(f"[engine] {text}\n")

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        delay = 0.1
        while True:
            if self.proc is None or self.proc.returncode is not None:
                if self._pump is not None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._pump, 2.0)
                rc = self.proc.returncode if self.proc else None
                last = "\n  ".join(list(self.tail)[-15:]) or "(no output)"
                fix = signal_fix(rc)
                raise EngineStartError(
                    f"engine {self.cmd[0]} {describe_exit(rc)} before it was ready"
                    + (f".\nFix: {fix}" if fix else "")
                    + f"\nlast output:\n  {last}"
                )
            status = await self.engine.probe(timeout_s=2.0)
            if status.ready:
                log.info("engine ready (pid %s)", self.pid)
                return
            if time.monotonic() > deadline:
                await self.stop()
                raise EngineStartError(
                    f"engine not ready after {self.start_timeout_s:g} s ({status.detail}); "
                    "raise SUPPORTLM_ENGINE_START_TIMEOUT_S for big models"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    async def supervise(self) -> None:
        """Restart the engine whenever it exits while we are not stopping; give up after
        `max_restarts` consecutive restarts that died within HEALTHY_RESET_S (`gave_up`)."""
        backoff = self.backoff_s
        while not self._stopping:
            assert self.proc is not None
            started = time.monotonic()
            rc = await self.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - started > HEALTHY_RESET_S:
                backoff, self.failures = self.backoff_s, 0
            how = describe_exit(rc)
            if self.failures >= self.max_restarts:
                fix = signal_fix(rc)
                self.gave_up = True
                log.error(
                    "engine %s %s again after %d restarts in a row; not restarting it (/readyz: engine_down)%s",
                    self.cmd[0], how, self.failures, f". Fix: {fix}" if fix else "",
                )  # fmt: skip
                return
            self.failures += 1
            log.error("engine %s unexpectedly; restart %d of at most %d in %.1f s",
                      how, self.failures, self.max_restarts, backoff)  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)
            if self._stopping:
                return
            try:
                await self.start()
                self.restarts += 1
                await self.wait_ready()
            except EngineStartError as exc:
                log.error("engine restart failed: %s", exc)
            except OSError as exc:  # the binary vanished, ...
                log.error("engine restart failed: %s", exc)

    async def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            log.info("stopping engine (pid %s)", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                log.warning("engine ignored SIGTERM for %.0f s: killing it", STOP_GRACE_S)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._pump is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 2.0)


SECRET_FLAGS = ("--api-key", "--api-key-file", "--hf-token", "--token", "--password")


def redact_args(cmd: list[str]) -> list[str]:
    """A command line fit for the log: the value after a secret flag (or in `--flag=value`) is `***`."""
    out, hide = [], False
    for arg in cmd:
        if hide:
            out.append("***")
            hide = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag in SECRET_FLAGS:
            out.append(f"{flag}=***" if eq else arg)
            hide = not eq
            continue
        out.append(redact_url(arg) if "://" in arg else arg)
    return out


# ---------------------------------------------------------------- uvicorn without re-raised signals


def _uvicorn_server(app: Any, settings: ServeSettings) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises a captured SIGTERM after its shutdown, which would kill us before the
        engine is stopped; here the signal only starts the graceful shutdown."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            import threading

            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                log.info(
                    "%s: draining in-flight requests (up to %g s)",
                    signal.Signals(sig).name,
                    settings.drain_timeout_s,
                )
                self.should_exit = True

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # our JSON logging (configure_logging) stays in charge
        access_log=False,  # the gateway writes its own request log
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or 1,
        timeout_keep_alive=max(1, round(settings.limits.keep_alive_s)),
        # connections + tasks at once; beyond it uvicorn answers 503. uvicorn has no timeout for a request
        # whose headers arrive slowly: the proxy in front must (docs/deployment.md, client_header_timeout)
        limit_concurrency=settings.limits.max_connections,
        lifespan="on",
    )
    return Server(config)


def configure_logging(settings: ServeSettings) -> None:
    """Server logs (ours, uvicorn's) as JSON lines on stderr; the request log goes to stdout/file."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(settings.log.level)
    for noisy in ("httpx2", "httpcore2", "httpx", "httpcore"):  # one INFO line per engine call otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---------------------------------------------------------------- entry point


def serve(settings: ServeSettings | None = None) -> None:
    """Run the engine (when managed) and the gateway until SIGTERM/SIGINT; blocks.

    Args:
        settings: everything (default: `load_settings()`: defaults + SUPPORTLM_* env vars; the CLI builds
            it with `load_settings(params.serve)`).

    Raises:
        ConfigError: no API keys and allow_anonymous is false; model file missing; bad engine settings.
        MissingDependencyError: llama-server is needed but neither llama.server_bin nor
            supportlm.llamacpp can provide it.
        EngineStartError: the engine exited or stayed unhealthy past engine.start_timeout_s.
    """
    s = settings or load_settings()
    configure_logging(s)
    run_loop(serve_async(s))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (`uvicorn[standard]` brings it), else asyncio's own loop.

    The gateway's CPU on a box whose cores all decode is mostly the event loop (selecting, socket writes:
    one per streamed token); every CPU-second it takes stalls llama.cpp's threads. uvloop spends less of it:
    the bench's fixed-work rounds measured gateway/engine tokens/s at 8 users 0.91 with asyncio's loop and
    0.97 with uvloop (reports/bench.md). uvicorn's own `loop="auto"` does the same, but serve() runs
    uvicorn inside its loop, so the choice is made here."""
    try:
        import uvloop
    except ImportError:
        log.info("event loop: asyncio (uvloop is not installed)")
        asyncio.run(main)
        return
    log.info("event loop: uvloop %s", uvloop.__version__)
    uvloop.run(main)


async def serve_async(s: ServeSettings) -> None:
    from supportlm.serve.app import build_app
    from supportlm.serve.auth import KeyStore

    keys = KeyStore.load(
        s.api_keys.get_secret_value() if s.api_keys else None, s.api_keys_file, s.limits.min_key_length
    )
    if not len(keys) and not s.allow_anonymous:
        raise ConfigError(
            "no API keys configured: set SUPPORTLM_API_KEYS=id:key[,id:key] or SUPPORTLM_API_KEYS_FILE, "
            "or SUPPORTLM_ALLOW_ANONYMOUS=true for a local, open gateway"
        )
    engine = engine_from_settings(s)
    proc: EngineProcess | None = None
    supervisor: asyncio.Task[None] | None = None
    model_info: dict[str, Any] = {"model_source": "external"}
    try:
        if s.manages_engine:
            model_path, source = resolve_model(s)
            model_info = {"model_path": str(model_path), "model_source": source}
            log.info("serving %s model %s", source, model_path)
            proc = EngineProcess(
                engine_command(s, model_path),
                engine,
                start_timeout_s=s.engine.start_timeout_s,
                backoff_s=s.engine.restart_backoff_s,
                backoff_max_s=s.engine.restart_backoff_max_s,
                max_restarts=s.engine.max_restarts,
            )
            await proc.start()
            await proc.wait_ready()
            supervisor = asyncio.create_task(proc.supervise(), name="engine-supervisor")
        else:
            log.info("using external %s engine at %s", s.engine.kind, redact_url(s.engine_base_url))
        engine_down = (lambda: proc.gave_up) if proc is not None else None
        app = build_app(s, engine, model_info=model_info, engine_down=engine_down)
        server = _uvicorn_server(app, s)
        log.info("gateway on http://%s:%d (docs /docs, playground /playground)", s.host, s.port)
        await server.serve()
        log.info("gateway stopped")
    finally:
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if proc is not None:
            await proc.stop()
        await engine.aclose()


def main() -> None:  # pragma: no cover - `python -m supportlm.serve.server`
    try:
        serve()
    except SupportLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
