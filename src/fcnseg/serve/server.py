"""Run the app under uvicorn: one process, or ``workers`` processes each with its own model."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

from fastapi import FastAPI

import fcnseg
from fcnseg.serve.app import create_app
from fcnseg.serve.settings import ServeSettings

__all__ = ["app_from_env", "serve"]

_ENV_CHECKPOINT = "FCNSEG_SERVE_CHECKPOINT"
_ENV_SETTINGS = "FCNSEG_SERVE_SETTINGS"
_ENV_THREADS = "FCNSEG_SERVE_THREADS"


def app_from_env() -> FastAPI:
    """The app for one uvicorn worker process, built from the environment ``serve`` set.

    Raises:
        KeyError: ``FCNSEG_SERVE_CHECKPOINT`` is not set.
    """
    threads = os.environ.get(_ENV_THREADS)
    if threads:
        import torch

        torch.set_num_threads(int(threads))  # the workers share the cores instead of each all
    settings = ServeSettings.from_json(os.environ.get(_ENV_SETTINGS, "{}"))
    return create_app(fcnseg.load_model(os.environ[_ENV_CHECKPOINT]), settings)


def serve(
    checkpoint: str | Path,
    settings: ServeSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Serve ``checkpoint`` over HTTP until interrupted (blocks).

    Args:
        checkpoint: an fcnseg checkpoint or safetensors export.
        settings: batching, limits, device.
        host: interface to bind; the default is this machine only.
        port: TCP port.
        workers: processes, each loading the model and batching its own requests.
        log_level: uvicorn's log level.

    Raises:
        FileNotFoundError, CheckpointError: the checkpoint cannot be loaded.
        ValueError: bad settings or workers, or the address cannot be bound.
    """
    import uvicorn

    settings = settings or ServeSettings()
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    model = fcnseg.load_model(checkpoint)  # fail here, in one line, not inside a worker
    _check_bindable(host, port)
    if not _is_loopback(host):
        print(f"fcnseg serve: listening on {host}: reachable from other machines", file=sys.stderr)
    if workers == 1:
        uvicorn.run(create_app(model, settings), host=host, port=port, log_level=log_level)
        return
    del model
    os.environ[_ENV_CHECKPOINT] = str(Path(checkpoint).resolve())
    os.environ[_ENV_SETTINGS] = settings.to_json()
    os.environ[_ENV_THREADS] = str(max(1, (os.cpu_count() or 1) // workers))
    uvicorn.run(
        "fcnseg.serve.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_bindable(host: str, port: int) -> None:
    """A port in use or a bad address as a one-line ``ValueError`` before uvicorn starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve host {host!r}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from None
