"""``fcnseg demo``: the paper's Figure 2 on a real photo (a convolutionalized ImageNet
EfficientNet-Lite0 labels scikit-image's tabby cat, offline), then FCN-32s -> 16s -> 8s trained
on the embedded shapes set (plus the controls that split each gain into skip and extra steps),
evaluated, with a report and figures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

#: the Figure-2 classifier: ImageNet weights that install offline with fcnseg[weights]
FIGURE2_BACKBONE = "efficientnet_lite0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fcnseg.engine.demo import DEFAULT_CONTROLS, DEMO_SECONDS

    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEMO_SECONDS,
        help=f"wall-time budget of the whole demo (default {DEMO_SECONDS:g}); the runs share "
        "it and every learning-rate schedule ends within it",
    )
    parser.add_argument(
        "--no-time-limit",
        action="store_true",
        help="bound the runs by their recipe steps and minutes only",
    )
    parser.add_argument("--max-steps", type=int, help="cap each run's steps (quick check)")
    parser.add_argument(
        "--controls",
        default=",".join(DEFAULT_CONTROLS),
        help="control runs, comma-separated: continued (the coarser model trained on for the "
        "next stage's steps: skip vs extra steps), alone (FCN-8s from scratch for the whole "
        "line's steps; doubles the time), or none (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def figure2(out: Path, topk: int = 3) -> Path | None:
    """The convolutionalized classifier's heatmaps of its top ``topk`` ImageNet classes over
    scikit-image's ``chelsea.png`` (the tabby cat of the paper's Figure 2), written to ``out``;
    prints one ``LABEL: ...`` line per class. Returns None (and says why) when the photo's or the
    weights' package is missing."""
    import torch

    from fcnseg.inference.heatmap import classifier_heatmaps
    from fcnseg.models.pretrained import WeightsError
    from fcnseg.viz import heatmap_figure

    try:
        from skimage import data as photos
    except ImportError:
        print("figure 2 skipped: the photo needs scikit-image: pip install 'fcnseg[demo]'")
        return None
    image = torch.from_numpy(photos.chelsea()).permute(2, 0, 1).contiguous()
    try:
        maps = classifier_heatmaps(FIGURE2_BACKBONE, "DEFAULT", image)
    except WeightsError as e:
        print(f"figure 2 skipped: {e}")
        return None
    panels = []
    print(f"Figure 2: convolutionalized ImageNet {FIGURE2_BACKBONE} on chelsea.png")
    for k in maps.top(topk):
        p_image, peak = float(maps.image_probs[k]), float(maps.probs[k].max())
        panels.append((f"{maps.name(k)} (p={p_image:.2f}, peak {peak:.2f})", maps.probs[k].numpy()))
        print(f"{maps.name(k)} (class {k}): probability {p_image:.3f} (image), peak {peak:.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    heatmap_figure(image, panels).save(out)
    return out


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine.demo import run_demo

    if not args.no_time_limit and not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    started = time.perf_counter()
    heatmap = figure2(Path(args.out) / "figure2_heatmap.png")
    spent = time.perf_counter() - started  # inside the demo's budget
    result = run_demo(
        out=args.out,
        budget_seconds=None if args.no_time_limit else max(args.seconds - spent, 1.0),
        max_steps=args.max_steps,
        controls=[c.strip() for c in args.controls.split(",") if c.strip() not in ("", "none")],
        progress=not args.no_progress,
    )
    print(result["table"])
    written = "metrics.json, report.md, figure.png, curves.png"
    written += ", figure2_heatmap.png" if heatmap else ""
    print(f"wrote {result['out']}/{written}")
    print(f"demo finished in {result['seconds']:.0f} s")
    return 0
