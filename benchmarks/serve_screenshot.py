"""The README's picture of the serving page, from a trained checkpoint and an image of yours.

    python -m benchmarks.serve_screenshot --checkpoint runs/demo/fcn8s/best.pt \
        --image IMAGE.png --out docs/serve_screenshot.png

Starts ``fcnseg serve`` on a free 127.0.0.1 port, uploads the image through the page in
Debian's headless chromium (Playwright) and saves the page once the overlay and legend are
drawn. ``--demo-image`` uses a ``shapes`` val image instead of a file (for the demo model).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import subprocess
import sys
from pathlib import Path

import httpx

from benchmarks.serve import HOST, free_port, screenshot, wait_healthy


def shapes_val_png(index: int) -> bytes:
    """Image ``index`` of the embedded ``shapes`` val split, PNG-encoded."""
    from PIL import Image

    from fcnseg.data import build_dataset

    image, _ = build_dataset("shapes", split="val")[index]
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return buf.getvalue()


async def _healthy(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await wait_healthy(client)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="the image to upload")
    source.add_argument("--demo-image", type=int, metavar="INDEX", help="a shapes val image")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    body = args.image.read_bytes() if args.image else shapes_val_png(args.demo_image)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fcnseg", "serve", "--checkpoint", args.checkpoint,
         "--host", HOST, "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://{HOST}:{port}"
    try:
        asyncio.run(_healthy(base))
        screenshot(base, body, args.out)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
