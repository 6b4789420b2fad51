"""The FastAPI app: health, model card, prediction in three formats, and the web page.

Endpoints (TorchServe's names as aliases):

- ``GET /health`` (``/ping``): 200 once the model is loaded and warmed up, else 503;
- ``GET /model``: architecture, classes, palette, input conventions, limits;
- ``POST /predict?format=png|overlay|json`` (``/predictions/{model_name}``): one image as the
  raw body or as the file part of a multipart form;
- ``GET /``: the page (pick or drop an image, overlay with opacity, legend, mask download).

Every error is JSON ``{"code", "type", "message"}`` with its HTTP status; one bad request
never stops the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from importlib import resources

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from torch import nn

from fcnseg.serve.batching import MicroBatcher, QueueFull
from fcnseg.serve.decoding import CorruptImage, ImageTooLarge, NotAnImage, decode_image
from fcnseg.serve.encoding import class_masks, class_shares, index_png, overlay_png
from fcnseg.serve.model_runner import ModelRunner
from fcnseg.serve.settings import ServeSettings

__all__ = ["FORMATS", "ApiError", "create_app"]

log = logging.getLogger("fcnseg.serve")

FORMATS = ("png", "overlay", "json")
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file in a form


class ApiError(Exception):
    """An error answered as JSON ``{"code", "type", "message"}`` with status ``code``."""

    def __init__(self, code: int, kind: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.kind, self.message, self.headers = code, kind, message, headers or {}


def _error_response(code: int, kind: str, message: str, headers: dict | None = None):
    return JSONResponse(
        {"code": code, "type": kind, "message": message}, status_code=code, headers=headers
    )


def create_app(model: nn.Module, settings: ServeSettings | None = None) -> FastAPI:
    """The HTTP app serving ``model``.

    The model is warmed up in the background once the app starts (``/health`` answers 503
    until then); predictions share it through a :class:`~fcnseg.serve.batching.MicroBatcher`.

    Args:
        model: an fcnseg model, e.g. ``fcnseg.load_model(path)``.
        settings: limits, batching and device (default :class:`ServeSettings`).

    Returns:
        A FastAPI app for uvicorn (or FastAPI's ``TestClient``; use it as a context manager
        so start-up runs).

    Raises:
        ValueError: more than 256 classes, or a device that is not there.
    """
    settings = settings or ServeSettings()
    runner = ModelRunner(model, settings.device, settings.precision)
    name = settings.model_name or f"{runner.config.get('arch')}_{runner.config.get('backbone')}"
    batcher = MicroBatcher(
        runner,
        max_batch=settings.max_batch,
        max_wait=settings.max_wait_ms / 1000.0,
        max_queue=settings.max_queue,
    )
    state = {"status": "loading", "error": None}
    page = resources.files("fcnseg.serve").joinpath("page.html").read_text(encoding="utf-8")
    retry = {"Retry-After": str(settings.retry_after_s)}

    async def warm_up() -> None:
        h, w = settings.warmup_size
        try:
            # requests are refused until ready, so this never runs beside the batcher's worker
            await asyncio.to_thread(runner, [torch.zeros(3, h, w, dtype=torch.uint8)])
            state["status"] = "ready"
        except Exception as e:  # noqa: BLE001 - reported by /health, the server stays up
            state["status"], state["error"] = "failed", f"{type(e).__name__}: {e}"
            log.error("warm-up failed: %s", state["error"])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        task = asyncio.get_running_loop().create_task(warm_up())
        try:
            yield
        finally:
            task.cancel()
            await batcher.stop()

    app = FastAPI(title="fcnseg", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.batcher, app.state.runner, app.state.settings = batcher, runner, settings

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return _error_response(e.code, e.kind, e.message, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return _error_response(e.status_code, kind, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _bad_params(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(400, "bad_request", f"{where}: {first.get('msg', 'invalid')}")

    def health_body() -> tuple[int, dict]:
        s = batcher.stats
        body = {
            "status": state["status"],
            "model": name,
            "queue": {"waiting": batcher.waiting, "max": settings.max_queue},
            "batches": {
                "count": s.batches,
                "images": s.images,
                "largest": s.largest,
                "max": settings.max_batch,
                "rejected": s.rejected,
                "failed": s.failed,
            },
        }
        if state["error"]:
            body["error"] = state["error"]
        return (200 if state["status"] == "ready" else 503), body

    @app.get("/health")
    async def health():
        """200 ``{"status": "ready", ...}`` once warmed up; 503 while loading or failed."""
        code, body = health_body()
        return JSONResponse(body, status_code=code, headers=None if code == 200 else retry)

    @app.get("/ping")
    async def ping():
        """TorchServe's health check: ``{"status": "Healthy"}`` or 503 ``"Unhealthy"``."""
        code, _ = health_body()
        return JSONResponse({"status": "Healthy" if code == 200 else "Unhealthy"}, status_code=code)

    @app.get("/model")
    async def model_card():
        """The model: arch, backbone, classes with colours, palette, input conventions."""
        return {
            "name": name,
            **runner.describe(),
            "formats": list(FORMATS),
            "limits": {"max_bytes": settings.max_bytes, "max_pixels": settings.max_pixels},
            "batching": {
                "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms,
                "max_queue": settings.max_queue,
            },
        }

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    async def read_upload(request: Request) -> bytes:
        """The image bytes of a raw or multipart body, refusing more than ``max_bytes``."""
        multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
        limit = settings.max_bytes + (_MULTIPART_SLACK if multipart else 0)
        too_large = ApiError(
            413, "payload_too_large", f"upload exceeds the limit of {settings.max_bytes} bytes"
        )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "bad_request", "invalid Content-Length")
            if int(declared) > limit:
                raise too_large  # refused before reading a byte of the body
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "client_disconnected", "the client went away") from None
        body = b"".join(chunks)
        if multipart:
            body = await file_part(request, body)
        if len(body) > settings.max_bytes:
            raise too_large
        return body

    async def file_part(request: Request, body: bytes) -> bytes:
        async def stream():
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=1).parse()
        except MultiPartException as e:
            raise ApiError(400, "bad_request", f"malformed multipart form ({e.message})") from None
        try:
            for value in form.values():
                if isinstance(value, UploadFile):
                    return await value.read()  # its filename is ignored: never used as a path
        finally:
            await form.close()
        raise ApiError(400, "bad_request", "multipart form without a file part")

    async def run_prediction(request: Request, fmt: str, alpha: float | None) -> Response:
        if fmt not in FORMATS:
            raise ApiError(400, "bad_request", f"format must be one of {', '.join(FORMATS)}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ApiError(400, "bad_request", "alpha must be in [0, 1]")
        if state["status"] != "ready":
            raise ApiError(503, "not_ready", f"model is {state['status']}", retry)
        if batcher.waiting >= settings.max_queue:  # refuse before reading the body
            batcher.stats.rejected += 1
            raise ApiError(503, "queue_full", "server busy: queue full", retry)
        data = await read_upload(request)
        if not data:
            raise ApiError(400, "bad_request", "empty body: send an image file")
        try:
            image = await run_in_threadpool(decode_image, data, settings.max_pixels)
        except NotAnImage as e:
            raise ApiError(415, "unsupported_media_type", str(e)) from None
        except ImageTooLarge as e:
            raise ApiError(413, "payload_too_large", str(e)) from None
        except CorruptImage as e:
            raise ApiError(400, "bad_image", str(e)) from None
        try:
            labels = await batcher.submit(tuple(image.shape[1:]), image)
        except QueueFull:
            raise ApiError(503, "queue_full", "server busy: queue full", retry) from None
        except Exception as e:  # noqa: BLE001 - a failed forward fails this request only
            log.exception("inference failed")
            raise ApiError(500, "inference_failed", f"{type(e).__name__}: {e}") from None
        return await run_in_threadpool(encode, fmt, image, labels, alpha)

    def encode(fmt: str, image: torch.Tensor, labels: torch.Tensor, alpha: float | None):
        if fmt == "json":
            return JSONResponse(class_masks(labels, runner.class_names))
        shares = json.dumps(class_shares(labels, runner.class_names), separators=(",", ":"))
        headers = {"X-Class-Shares": shares, "X-Image-Size": f"{labels.shape[1]}x{labels.shape[0]}"}
        if fmt == "overlay":
            a = settings.overlay_alpha if alpha is None else alpha
            body = overlay_png(image, labels, runner.palette, a)
        else:
            body = index_png(labels, runner.palette)
        return Response(body, media_type="image/png", headers=headers)

    @app.post("/predict")
    async def predict(request: Request, format: str = "png", alpha: float | None = None):
        """Label one image. ``format``: ``png`` (index PNG with the palette, the input's
        size; default), ``overlay`` (colours over the image, weight ``alpha``), ``json``
        (``[{"label", "score", "mask", "index"}]``: present classes, pixel share, base64
        PNG mask). ``png``/``overlay`` carry the shares in the ``X-Class-Shares`` header."""
        return await run_prediction(request, format, alpha)

    @app.post("/predictions/{model_name}")
    async def predictions(
        model_name: str, request: Request, format: str = "png", alpha: float | None = None
    ):
        """TorchServe's inference path; the same as ``POST /predict``."""
        if model_name != name:
            raise ApiError(404, "model_not_found", f"no model {model_name!r}; this is {name!r}")
        return await run_prediction(request, format, alpha)

    return app
