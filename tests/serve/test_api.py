"""The HTTP contract: each endpoint and format, each error status, and serving after errors."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.inference import model_palette
from tests.serve.conftest import CLASS_NAMES, make_image, png_bytes

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("httpx", reason="httpx is not installed: pip install '.[serve-test]'")

from fastapi.testclient import TestClient  # noqa: E402

from fcnseg.serve import ServeSettings, create_app  # noqa: E402

MAX_BYTES = 200_000
MAX_PIXELS = 300 * 300
SETTINGS = ServeSettings(
    warmup_size=(32, 32), max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, max_wait_ms=0
)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model, SETTINGS)) as c:
        deadline = time.monotonic() + 60
        while c.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield c


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return make_image(70, 90, seed=1)  # not square, not a multiple of 32


def expected_labels(model, image: np.ndarray) -> torch.Tensor:
    """What the library gives for the same image, one at a time."""
    return fcnseg.predict(model, [torch.from_numpy(image).permute(2, 0, 1)])[0]


def assert_error(response, code: int, kind: str | None = None) -> None:
    assert response.status_code == code, response.text
    body = response.json()
    assert body["code"] == code and body["message"]
    if kind:
        assert body["type"] == kind


def test_health_ready_after_warm_up_and_ping_alias(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    assert r.json()["queue"]["max"] == SETTINGS.max_queue
    assert client.get("/ping").json() == {"status": "Healthy"}


def test_not_ready_before_start_up_answers_503_with_retry_after(model, image):
    app = create_app(model, SETTINGS)
    c = TestClient(app)  # not entered: start-up (load + warm-up) has not run
    r = c.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert r.headers["retry-after"] == "1"
    r = c.post("/predict", content=png_bytes(image))
    assert_error(r, 503, "not_ready")
    assert c.get("/ping").json() == {"status": "Unhealthy"}


def test_model_card_names_arch_classes_palette_and_input(client, model):
    card = client.get("/model").json()
    assert (card["arch"], card["backbone"], card["num_classes"]) == ("fcn8s", "resnet18", 3)
    assert [c["label"] for c in card["classes"]] == CLASS_NAMES
    palette = [list(c) for c in model_palette(model)[:3]]
    assert card["palette"] == palette
    assert [c["color"] for c in card["classes"]] == palette
    assert card["input"]["preprocess"] == model.config["preprocess"]
    assert card["formats"] == ["png", "overlay", "json"]
    assert card["limits"] == {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS}


@pytest.mark.parametrize("how", ["raw", "multipart"])
def test_png_is_the_index_mask_with_the_palette_at_input_size(client, model, image, how):
    data = png_bytes(image)
    if how == "raw":
        r = client.post("/predict", content=data, headers={"Content-Type": "image/png"})
    else:
        r = client.post("/predict", files={"image": ("../../etc/passwd", data, "image/png")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    mask = Image.open(io.BytesIO(r.content))
    assert mask.mode == "P" and mask.size == (90, 70)
    np.testing.assert_array_equal(np.asarray(mask), expected_labels(model, image).numpy())
    colours = np.asarray(mask.getpalette()[: 3 * 3]).reshape(3, 3).tolist()
    assert colours == [list(c) for c in model_palette(model)[:3]]


def test_png_header_lists_the_class_shares(client, model, image):
    import json

    r = client.post("/predict", content=png_bytes(image))
    shares = json.loads(r.headers["x-class-shares"])
    counts = torch.bincount(expected_labels(model, image).flatten(), minlength=3)
    assert [s["index"] for s in shares] == [i for i in range(3) if counts[i] > 0]
    for s in shares:
        assert s["label"] == CLASS_NAMES[s["index"]]
        assert s["score"] == counts[s["index"]].item() / (70 * 90)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_overlay_blends_palette_colours_over_the_image(client, model, image, alpha):
    r = client.post(f"/predict?format=overlay&alpha={alpha}", content=png_bytes(image))
    assert r.status_code == 200
    got = np.asarray(Image.open(io.BytesIO(r.content)))
    assert got.shape == image.shape
    colours = np.asarray(model_palette(model), dtype=np.float32)[expected_labels(model, image)]
    want = np.round(alpha * colours + (1 - alpha) * image.astype(np.float32))
    # both sides round the same float32 expression: at most one step apart at a .5 tie
    assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= 1
    if alpha == 0.0:
        np.testing.assert_array_equal(got, image)


def test_json_is_the_hugging_face_list_of_label_score_mask(client, model, image):
    r = client.post("/predict?format=json", files={"file": ("x.png", png_bytes(image))})
    assert r.status_code == 200
    entries = r.json()
    labels = expected_labels(model, image).numpy()
    seen = np.zeros(labels.shape, dtype=int)
    for e in entries:
        assert e["label"] == CLASS_NAMES[e["index"]]
        mask = Image.open(io.BytesIO(base64.b64decode(e["mask"])))
        assert mask.mode == "L" and mask.size == (90, 70)
        m = np.asarray(mask)
        assert set(np.unique(m)) <= {0, 255}
        np.testing.assert_array_equal(m == 255, labels == e["index"])
        assert e["score"] == (m == 255).sum() / m.size
        seen += m == 255
    assert (seen == 1).all()  # the masks partition the image
    assert sum(e["score"] for e in entries) == pytest.approx(1.0, abs=1e-12)


def test_torchserve_alias_gives_the_same_mask_and_checks_the_name(client, image):
    data = png_bytes(image)
    a = client.post("/predict", content=data)
    b = client.post("/predictions/fcn8s_resnet18", content=data)
    assert b.status_code == 200 and a.content == b.content
    assert_error(client.post("/predictions/other", content=data), 404, "model_not_found")


def test_grey_and_alpha_images_are_served_as_rgb(client, model, image):
    rgba = np.dstack([image, np.full(image.shape[:2], 7, np.uint8)])
    r = client.post("/predict", content=png_bytes(rgba))
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(r.content))), expected_labels(model, image).numpy()
    )
    r = client.post("/predict", content=png_bytes(image[:, :, 0]))
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (90, 70)


def _huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _bad_requests(image: np.ndarray):
    good = png_bytes(image)
    return {
        "not an image": (dict(content=b"hello, not an image"), 415, "unsupported_media_type"),
        "truncated png": (dict(content=good[: len(good) // 2]), 400, "bad_image"),
        "empty body": (dict(content=b""), 400, "bad_request"),
        "bytes over the limit": (dict(content=b"\0" * (MAX_BYTES + 1)), 413, "payload_too_large"),
        "multipart over the limit": (
            dict(files={"file": ("x.png", b"\0" * (MAX_BYTES + 1))}),
            413,
            "payload_too_large",
        ),
        "pixels over the limit": (
            dict(content=png_bytes(np.zeros((301, 300, 3), np.uint8))),
            413,
            "payload_too_large",
        ),
        # declared 100000 x 100000 in a 100-byte file: refused from the header, never decoded
        "pixel bomb": (dict(content=_huge_png_header(100_000, 100_000)), 413, "payload_too_large"),
        "form without a file": (
            dict(
                content=b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nx\r\n--b--\r\n',
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            ),
            400,
            "bad_request",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "not an image",
        "truncated png",
        "empty body",
        "bytes over the limit",
        "multipart over the limit",
        "pixels over the limit",
        "pixel bomb",
        "form without a file",
    ],
)
def test_bad_upload_gets_json_error_and_the_server_keeps_serving(client, image, case):
    kwargs, code, kind = _bad_requests(image)[case]
    assert_error(client.post("/predict", **kwargs), code, kind)
    assert client.get("/health").status_code == 200
    assert client.post("/predict", content=png_bytes(image)).status_code == 200


@pytest.mark.parametrize(
    "query", ["format=gif", "alpha=2", "alpha=abc", "format=overlay&alpha=-0.1"]
)
def test_bad_parameters_are_400(client, image, query):
    assert_error(client.post(f"/predict?{query}", content=png_bytes(image)), 400, "bad_request")


def test_unknown_path_and_method_are_json_errors(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_page_is_served_at_root(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for element in ('id="file"', 'id="opacity"', 'id="legend"', 'id="download"'):
        assert element in r.text
