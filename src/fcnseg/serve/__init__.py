"""Serve a model over HTTP: a FastAPI app with micro-batching, and a web page.

``create_app(model, settings)`` builds the app; ``serve(checkpoint, ...)`` runs it under
uvicorn (what ``fcnseg serve`` calls). Needs the ``serve`` extra (fastapi, uvicorn,
python-multipart).
"""

from fcnseg.serve.app import FORMATS, ApiError, create_app
from fcnseg.serve.batching import MicroBatcher, QueueFull
from fcnseg.serve.server import serve
from fcnseg.serve.settings import ServeSettings

__all__ = [
    "FORMATS",
    "ApiError",
    "MicroBatcher",
    "QueueFull",
    "ServeSettings",
    "create_app",
    "serve",
]
