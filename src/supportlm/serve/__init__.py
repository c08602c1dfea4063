"""Model serving: a FastAPI gateway (app.py) over an OpenAI-compatible engine (engines.py).

    from supportlm.serve.app import build_app
    from supportlm.serve.server import serve
    from supportlm.serve.settings import load_settings
    serve(load_settings())            # llama-server child + gateway, until SIGTERM/SIGINT
    app = build_app(load_settings())  # just the ASGI app (engine elsewhere)

Settings (settings.py) are params.yaml's `serve:` block + SUPPORTLM_* env + secrets; the gateway is split
into protocol schemas (schemas.py), admission (gateway.py), streaming (streaming.py) and the app (app.py).
`serve/batch.py` (offline batch inference over `supportlm.inference`) is independent of the gateway.
"""
