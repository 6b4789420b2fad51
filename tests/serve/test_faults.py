"""A real uvicorn server under a burst beyond its queue and a client that hangs up mid-upload."""

from __future__ import annotations

import concurrent.futures
import socket
import threading

import pytest

from tests.serve.conftest import make_image, png_bytes, running_server

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("httpx", reason="httpx is not installed: pip install '.[serve-test]'")

import httpx  # noqa: E402

from fcnseg.serve import ServeSettings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def small_queue_server(model):
    # one image running and one waiting at most, each taking a visible time (768 x 1024)
    settings = ServeSettings(warmup_size=(768, 1024), max_batch=1, max_wait_ms=0, max_queue=1)
    with running_server(create_app(model, settings)) as base:
        yield base


def test_burst_beyond_the_queue_gets_503_with_retry_after_then_serves(small_queue_server):
    base, n = small_queue_server, 12
    body = png_bytes(make_image(768, 1024, seed=3))
    barrier = threading.Barrier(n)

    def post(_):
        with httpx.Client(base_url=base, timeout=60) as c:
            barrier.wait(10)
            return c.post("/predict", content=body)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(post, range(n)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes  # refused or served: never an error or a hang
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and r.json()["type"] == "queue_full"
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.post(f"{base}/predict", content=body, timeout=60).status_code == 200


def test_client_hanging_up_mid_upload_leaves_the_server_healthy(small_queue_server):
    host, port = small_queue_server.removeprefix("http://").split(":")
    body = png_bytes(make_image(64, 64, seed=4))
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            head = (
                f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            s.sendall(head.encode() + body[: len(body) // 2])  # then close: half a body
    assert httpx.get(f"{small_queue_server}/health").status_code == 200
    r = httpx.post(f"{small_queue_server}/predict", content=body, timeout=60)
    assert r.status_code == 200
