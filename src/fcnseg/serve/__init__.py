"""Serve a model over HTTP: a FastAPI app with micro-batching, and a web page.

``create_app(model, settings)`` builds the app; ``serve(checkpoint, ...)`` runs it under
uvicorn (what ``fcnseg serve`` calls). Needs the ``serve`` extra (fastapi, uvicorn,
python-multipart).
"""

import importlib

# name -> module: imported on first use (PEP 562), so ``fcnseg.serve.settings`` (read by the
# command line's argument parser) works without the ``serve`` extra installed
_EXPORTS = {
    "FORMATS": "app",
    "ApiError": "app",
    "create_app": "app",
    "MicroBatcher": "batching",
    "QueueFull": "batching",
    "serve": "server",
    "ServeSettings": "settings",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fcnseg.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fcnseg.serve.{_EXPORTS[name]}"), name)


__all__ = [
    "FORMATS",
    "ApiError",
    "MicroBatcher",
    "QueueFull",
    "ServeSettings",
    "create_app",
    "serve",
]
