"""Load and faults of ``fcnseg serve``, measured against a server subprocess on 127.0.0.1.

    python -m benchmarks.serve [--soak 2000] [--screenshot docs/serve_screenshot.png]

Serves a ResNet-18 FCN-8s (11 CamVid classes; random weights: the speed does not depend on
them) and sends it CamVid-sized 360x480 images (a CamVid val image when ../shared/data/camvid
is there). Measures:

- requests/s and p50/p99 latency at concurrency 1, 8 and 32 (bounded request counts), and the
  failures at the server's queue size (64 waiting, more than the 32 clients);
- the server's resident memory (VmRSS) sampled every 100 of ``--soak`` requests (of the same
  image downscaled to 120x160, so 2,000 fit in the time on a shared 2-core machine);
- three faults, each followed by a health check and a normal request: clients that hang up
  mid-upload, a slow client sending its body in small pieces (while others are served), and a
  burst of more requests than the queue holds (503s with Retry-After expected).

Writes ``benchmarks/results/serve-<date>.json`` and ``.md``. Only 127.0.0.1 is contacted and
every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

import fcnseg

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent
CAMVID = ROOT.parent.parent / "shared" / "data" / "camvid"
QUEUE = 64
LOAD = {1: 30, 8: 96, 32: 160}  # concurrency -> requests
SOAK_SIZE = (120, 160)  # (H, W) of the soak images: a third of CamVid's side, to fit 2,000
DEADLINE_S = 120.0  # per phase


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def camvid_image() -> tuple[bytes, str]:
    """PNG bytes of a 360x480 image: a CamVid val image if present, else a synthetic one."""
    images = sorted((CAMVID / "val" / "images").glob("*.png")) if CAMVID.exists() else []
    if images:
        img = Image.open(images[0]).convert("RGB")
        if img.size == (480, 360):
            return images[0].read_bytes(), f"CamVid val {images[0].name}"
    g = np.random.default_rng(0)
    arr = np.asarray(
        Image.fromarray(g.integers(0, 256, (23, 30, 3), dtype=np.uint8)).resize((480, 360))
    )
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue(), "synthetic 360x480"


def downscaled(body: bytes, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(body)).convert("RGB").resize(size[::-1]).save(buf, format="PNG")
    return buf.getvalue()


def class_names() -> list[str] | None:
    path = CAMVID / "classes.txt"
    return path.read_text().split() if path.exists() else None


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def wait_healthy(client: httpx.AsyncClient, timeout: float = 180.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if (await client.get("/health")).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("server did not become healthy")


async def healthy_and_serving(client: httpx.AsyncClient, body: bytes) -> bool:
    h = await client.get("/health")
    p = await client.post("/predict", content=body)
    return h.status_code == 200 and p.status_code == 200


async def load(client: httpx.AsyncClient, body: bytes, concurrency: int, total: int) -> dict:
    """``total`` requests from ``concurrency`` clients, each sending the next when answered."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    counter = iter(range(total))
    deadline = time.monotonic() + DEADLINE_S

    async def worker():
        for _ in counter:
            if time.monotonic() > deadline:
                return
            t = time.perf_counter()
            try:
                r = await client.post("/predict", content=body)
                code = r.status_code
            except httpx.HTTPError:
                code = -1
            latencies.append(time.perf_counter() - t)
            codes[code] = codes.get(code, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ok = codes.get(200, 0)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "ok": ok,
        "failed": len(latencies) - ok,
        "codes": {str(k): v for k, v in sorted(codes.items())},
        "req_per_s": ok / wall,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "wall_s": wall,
    }


async def soak(client: httpx.AsyncClient, body: bytes, pid: int, total: int) -> dict:
    """``total`` requests at concurrency 8, the server's RSS sampled every 100."""
    samples = [(0, rss_kib(pid))]
    failed = 0
    for done in range(0, total, 100):
        result = await load(client, body, 8, min(100, total - done))
        failed += result["failed"]
        samples.append((done + result["requests"], rss_kib(pid)))
    # the first hundred requests settle the allocator; growth is judged after them
    settled = [kib for n, kib in samples if n >= 100]
    return {
        "requests": samples[-1][0],
        "failed": failed,
        "rss_mib": [(n, round(kib / 1024, 1)) for n, kib in samples],
        "rss_after_100_mib": round(settled[0] / 1024, 1),
        "rss_last_mib": round(settled[-1] / 1024, 1),
        "rss_max_mib": round(max(settled) / 1024, 1),
        "growth_after_100_mib": round((settled[-1] - settled[0]) / 1024, 1),
    }


def hang_up_mid_upload(port: int, body: bytes, n: int = 20) -> None:
    """``n`` clients announce the whole body, send half, and close the connection."""
    for _ in range(n):
        with socket.create_connection((HOST, port), timeout=5) as s:
            head = (
                f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            s.sendall(head + body[: len(body) // 2])


def slow_upload(port: int, body: bytes, piece: int = 8192, pause: float = 0.02) -> dict:
    """One client sending its body ``piece`` bytes at a time; returns its status and time."""
    start = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=60) as s:
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        s.sendall(head)
        for i in range(0, len(body), piece):
            s.sendall(body[i : i + piece])
            time.sleep(pause)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1]) if reply else -1
    return {
        "status": status,
        "seconds": time.perf_counter() - start,
        "pieces": -(-len(body) // piece),
    }


async def faults(client: httpx.AsyncClient, port: int, body: bytes) -> dict:
    out = {}
    await asyncio.to_thread(hang_up_mid_upload, port, body)
    out["hang_up_mid_upload"] = {
        "clients": 20,
        "healthy_after": await healthy_and_serving(client, body),
    }

    slow = asyncio.create_task(asyncio.to_thread(slow_upload, port, body))
    during = await load(client, body, 4, 40)  # others are served while it trickles in
    slow_result = await slow
    out["slow_client"] = {
        **slow_result,
        "others_during": {k: during[k] for k in ("requests", "failed", "p50_ms", "p99_ms")},
        "healthy_after": await healthy_and_serving(client, body),
    }

    burst = 4 * QUEUE  # all at once: far more than the queue holds
    result = await load(client, body, burst, burst)
    retry_after = None
    r = None
    for _ in range(3):  # a fresh burst to read one 503's headers
        rs = await asyncio.gather(*(client.post("/predict", content=body) for _ in range(burst)))
        r = next((x for x in rs if x.status_code == 503), None)
        if r is not None:
            retry_after = r.headers.get("retry-after")
            break
    out["burst_beyond_queue"] = {
        "requests": result["requests"],
        "codes": result["codes"],
        "retry_after": retry_after,
        "error_body": r.json() if r is not None else None,
        "healthy_after": await healthy_and_serving(client, body),
    }
    return out


def screenshot(base: str, image: bytes, path: Path) -> None:
    """The page with an uploaded image (for the README), via Debian's chromium."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        photo = Path(tmp) / "camvid.png"
        photo.write_bytes(image)
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1100, "height": 780})
        page.goto(base + "/")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-state=done]", timeout=60_000)
        page.screenshot(path=str(path))
        browser.close()


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "fcn8s_resnet18_camvid.pt"
        names = class_names()
        model = fcnseg.build_model(
            "fcn8s", backbone="resnet18", num_classes=len(names or range(11)), class_names=names
        )
        fcnseg.save_model(model, ckpt)
        del model
        body, source = camvid_image()
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "fcnseg", "serve", "--checkpoint", str(ckpt),
             "--host", HOST, "--port", str(port), "--max-queue", str(QUEUE),
             "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
             "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://{HOST}:{port}"
        limits = httpx.Limits(max_connections=8 * QUEUE, max_keepalive_connections=8 * QUEUE)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
                ready_s = await wait_healthy(client)
                results = {"ready_s": ready_s, "image": source, "image_bytes": len(body)}
                results["load"] = [await load(client, body, c, n) for c, n in LOAD.items()]
                for r in results["load"]:
                    print(json.dumps(r), flush=True)
                small = downscaled(body, SOAK_SIZE)
                results["soak"] = await soak(client, small, server.pid, args.soak)
                print(json.dumps(results["soak"]), flush=True)
                results["faults"] = await faults(client, port, body)
                print(json.dumps(results["faults"]), flush=True)
                results["health_end"] = (await client.get("/health")).json()
            if args.screenshot:
                await asyncio.to_thread(screenshot, base, body, Path(args.screenshot))
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
    return results


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def markdown(meta: dict, r: dict) -> str:
    lines = [
        f"# fcnseg serve: {meta['date']}",
        "",
        f"{meta['machine']}. Model: ResNet-18 FCN-8s, 11 classes; image: {r['image']} "
        f"({r['image_bytes']} bytes PNG), `format=png`; max batch {meta['max_batch']}, "
        f"max wait {meta['max_wait_ms']} ms, queue {QUEUE}. Client and server share the CPU.",
        "",
        "| concurrency | requests | failed | req/s | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["load"]:
        lines.append(
            f"| {x['concurrency']} | {x['requests']} | {x['failed']} | {x['req_per_s']:.1f} "
            f"| {x['p50_ms']:.0f} | {x['p99_ms']:.0f} |"
        )
    s, f = r["soak"], r["faults"]
    b = f["burst_beyond_queue"]
    lines += [
        "",
        f"Soak: {s['requests']} requests (concurrency 8, the image at 120x160), "
        f"{s['failed']} failed; server RSS "
        f"{s['rss_after_100_mib']} MiB after 100, {s['rss_last_mib']} MiB at the end "
        f"(max {s['rss_max_mib']}, growth {s['growth_after_100_mib']} MiB).",
        "",
        f"- hang-up mid-upload ({f['hang_up_mid_upload']['clients']} clients): healthy after: "
        f"{f['hang_up_mid_upload']['healthy_after']}",
        f"- slow client ({f['slow_client']['pieces']} pieces of 8 KiB, 20 ms apart): status "
        f"{f['slow_client']['status']} in {f['slow_client']['seconds']:.1f} s; others meanwhile "
        f"p50 {f['slow_client']['others_during']['p50_ms']:.0f} ms, failed "
        f"{f['slow_client']['others_during']['failed']}; healthy after: "
        f"{f['slow_client']['healthy_after']}",
        f"- burst of {b['requests']} at once: {b['codes']}, Retry-After {b['retry_after']}; "
        f"healthy after: {b['healthy_after']}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", type=int, default=2000, help="requests for the RSS check")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--screenshot", help="also save the page with the image here (PNG)")
    parser.add_argument("--out", default=str(ROOT / "results"), help="results folder")
    args = parser.parse_args()
    start = time.time()
    results = asyncio.run(run(args))
    meta = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end",
        "torch": __import__("torch").__version__,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "seconds": round(time.time() - start, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"serve-{dt.date.today().isoformat()}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, **results}, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(meta, results))
    print(markdown(meta, results))
    print(f"wrote {stem}.json/.md in {meta['seconds']} s")


if __name__ == "__main__":
    main()
