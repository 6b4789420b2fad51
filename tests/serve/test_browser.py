"""The web page in a real headless Chromium: upload an image, see the overlay and legend.

Skips, saying why, where Debian's ``chromium`` or the Python ``playwright`` package is absent
(``make test`` installs both where it can). The screenshot is kept as a test artefact under
pytest's tmp_path, printed at the end of the test.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

import fcnseg
from fcnseg.inference import model_palette
from tests.serve.conftest import CLASS_NAMES, make_image, running_server

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("httpx", reason="httpx is not installed: pip install '.[serve-test]'")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install '.[serve-test]'"
)

from PIL import Image  # noqa: E402

from fcnseg.serve import ServeSettings, create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="no Chromium at /usr/bin/chromium (Debian: apt-get install chromium)",
)


def test_page_uploads_an_image_and_shows_overlay_legend_and_download(model, tmp_path):
    height, width = 120, 160
    image = make_image(height, width, seed=5)
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    labels = fcnseg.predict(model, [torch.from_numpy(image).permute(2, 0, 1)])[0]
    counts = torch.bincount(labels.flatten(), minlength=3)
    palette = model_palette(model)

    settings = ServeSettings(warmup_size=(height, width))
    with running_server(create_app(model, settings)) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(base + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('fcn8s')")
            page.set_input_files("#file", str(path))
            page.wait_for_selector("body[data-state=done]", timeout=30_000)

            # the overlay has the image's size
            size = page.eval_on_selector("#overlay", "c => [c.width, c.height]")
            assert size == [width, height]

            # the legend: one row per present class, its name, colour and share
            rows = page.eval_on_selector_all(
                ".legend-entry",
                "rs => rs.map(r => [Number(r.dataset.index), r.querySelector('.name').textContent,"
                " r.querySelector('.share').textContent,"
                " getComputedStyle(r.querySelector('.swatch')).backgroundColor])",
            )
            present = [i for i in range(3) if counts[i] > 0]
            assert [r[0] for r in rows] == present
            for index, name, share, colour in rows:
                assert name == CLASS_NAMES[index]
                assert share == f"{100 * counts[index].item() / labels.numel():.1f}%"
                assert colour == "rgb({}, {}, {})".format(*palette[index])

            # opacity 0 shows the photo, 100 the class colours, pixel for pixel
            read = "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
            for value, want in ((0, image), (100, np.asarray(palette, np.uint8)[labels.numpy()])):
                page.fill("#opacity", str(value))
                page.dispatch_event("#opacity", "input")
                rgba = np.asarray(page.eval_on_selector("#overlay", read), np.uint8)
                np.testing.assert_array_equal(rgba.reshape(height, width, 4)[..., :3], want)

            # the download is the index PNG
            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / "mask.png"
            download.value.save_as(saved)
            np.testing.assert_array_equal(np.asarray(Image.open(saved)), labels.numpy())

            page.fill("#opacity", "50")
            page.dispatch_event("#opacity", "input")
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 0
            print(json.dumps({"screenshot": str(shot)}))
        finally:
            browser.close()
