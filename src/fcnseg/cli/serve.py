"""``fcnseg serve --checkpoint CKPT [--host 127.0.0.1] [--port 8000] [--workers N]``.

Serves the model over HTTP (FastAPI + uvicorn, the ``serve`` extra): ``GET /health``,
``GET /model``, ``POST /predict?format=png|overlay|json`` and the web page at ``/``.
"""

from __future__ import annotations

import argparse

from fcnseg.cli.precision_option import add_precision_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fcnseg.serve.settings import ServeSettings

    d = ServeSettings()
    parser.add_argument("--checkpoint", required=True, help="an fcnseg checkpoint or .safetensors")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: this machine)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument("--workers", type=int, default=1, help="processes, one model each")
    parser.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    add_precision_argument(parser, d.precision)
    parser.add_argument("--max-batch", type=int, default=d.max_batch, help="images per pass")
    parser.add_argument(
        "--max-wait-ms", type=float, default=d.max_wait_ms, help="wait for same-size company"
    )
    parser.add_argument(
        "--max-queue", type=int, default=d.max_queue, help="waiting requests before 503"
    )
    parser.add_argument("--max-bytes", type=int, default=d.max_bytes, help="largest upload")
    parser.add_argument("--max-pixels", type=int, default=d.max_pixels, help="largest image")
    parser.add_argument(
        "--warmup-size", default="x".join(map(str, d.warmup_size)), help="HxW of the warm-up"
    )
    parser.add_argument("--name", help="model name in /predictions/NAME (default arch_backbone)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")


def run(args: argparse.Namespace) -> int:
    try:
        from fcnseg.serve import ServeSettings, serve
    except ModuleNotFoundError as e:
        raise ValueError(f"{e.name} is missing: pip install 'fcnseg[serve]'") from None

    try:
        warmup = tuple(int(v) for v in args.warmup_size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--warmup-size must be HxW, got {args.warmup_size!r}") from None
    settings = ServeSettings(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_bytes=args.max_bytes,
        max_pixels=args.max_pixels,
        device=args.device,
        precision=args.precision,
        warmup_size=warmup,
        model_name=args.name,
    )
    serve(
        args.checkpoint,
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0
