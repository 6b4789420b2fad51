"""A tiny served model, test images, and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg

CLASS_NAMES = ["background", "disc", "bar"]


def tiny_model() -> torch.nn.Module:
    """ResNet-18 FCN-8s, 3 classes, random but fixed weights whose masks vary across an image.

    The score layers get non-zero weights (FCN-8s starts its skip scores at zero) so all three
    strides contribute, and a bias that centres each class's mean logit on a sample image, so
    the masks hold several classes rather than one.
    """
    torch.manual_seed(0)
    model = fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3, class_names=CLASS_NAMES)
    with torch.no_grad():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            layer = getattr(model, name)
            layer.weight.normal_(0.0, 0.05)
            layer.bias.zero_()
        model.eval()
        sample = torch.from_numpy(make_image(96, 128, seed=99)).permute(2, 0, 1)[None].float()
        mean = (sample / 255 - 0.45) / 0.225  # roughly the ImageNet normalisation
        model.score_fr.bias.copy_(-model(mean).mean(dim=(0, 2, 3)))
    return model


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("serve") / "tiny.pt"
    fcnseg.save_model(tiny_model(), path)
    return str(path)


@pytest.fixture(scope="session")
def model(checkpoint) -> torch.nn.Module:
    return fcnseg.load_model(checkpoint)


def make_image(height: int, width: int, seed: int) -> np.ndarray:
    """A blocky colour image (upsampled noise): structure at several scales, (H, W, 3) uint8."""
    g = np.random.default_rng(seed)
    coarse = g.integers(0, 256, size=(max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((width, height), Image.NEAREST)
    return np.array(img)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(get, timeout: float = 60.0) -> None:
    """Poll ``get("/health")`` until 200 (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get("/health").status_code == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("server not ready")


@contextlib.contextmanager
def running_server(app):
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields the base URL."""
    import httpx
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10.0) as client:
            wait_ready(client.get)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)
