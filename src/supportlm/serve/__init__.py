"""Model serving: FastAPI gateway (app.py) over an OpenAI-compatible engine (engines.py).

    from supportlm.serve import build_app, serve, ServeSettings
    serve(ServeSettings())            # llama-server child + gateway, until SIGTERM/SIGINT
    app = build_app(ServeSettings())  # just the ASGI app (engine elsewhere)

`serve/batch.py` (offline batch inference over `supportlm.inference`) is independent of the gateway.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeSettings", "build_app", "serve"]


def __getattr__(name: str) -> Any:  # lazy: `import supportlm.serve.batch` should not pull in FastAPI
    if name == "build_app":
        from supportlm.serve.app import build_app

        return build_app
    if name == "serve":
        from supportlm.serve.server import serve

        return serve
    if name == "ServeSettings":
        from supportlm.serve.settings import ServeSettings

        return ServeSettings
    raise AttributeError(name)
