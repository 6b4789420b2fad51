"""``fcnseg eval --checkpoint CKPT``: the paper's four metrics + boundary IoU of a checkpoint.

Prints the table, writes ``DIR/metrics.json`` (the keys of ``ConfusionMatrix.compute()`` and
``BoundaryIoU.compute()``, fractions in [0, 1], null for undefined per-class values) and
``DIR/confusion_matrix.png`` beside ``DIR/iou.png`` (a bar per class: its IoU, and the mean
IU; needs matplotlib, else it is left out with a note). Without ``--dataset`` the dataset,
root and val split come from the training recipe stored in the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fcnseg.cli.precision_option import add_precision_argument


def _describe(record: dict) -> str:
    isa = f", {record['cpu_isa']}" if "cpu_isa" in record else ""
    return f"{record['precision']} on {record['device']}{isa}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="an fcnseg checkpoint (best.pt)")
    parser.add_argument("--dataset", help="dataset name (default: the one it was trained on)")
    parser.add_argument("--root", help="dataset folder (default: the training recipe's)")
    parser.add_argument("--split", help="split to score (default: the recipe's val split)")
    parser.add_argument(
        "--tta", help="test-time augmentation, e.g. flip,0.75,1.0,1.25 (flip and/or scales)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument("--boundary-dilation", type=int, help="boundary IoU band width (px)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    add_precision_argument(parser)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument(
        "--data-option",
        dest="data_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dataset option (YAML value), e.g. sequences=[0001TP] for CamVid; repeatable. "
        "Replaces the recipe's data.options",
    )
    parser.add_argument("--out", help="folder for metrics.json (default: the checkpoint's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_options(items: list[str]) -> dict:
    """``["sequences=[0001TP]", "limit=8"]`` -> ``{"sequences": ["0001TP"], "limit": 8}``."""
    import yaml

    options = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--data-option {item!r} must look like key=value")
        try:
            options[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"--data-option {item!r}: cannot parse the value ({e})") from None
    return options


def run(args: argparse.Namespace) -> int:
    from fcnseg.accel.precision import precision_record, resolve_precision
    from fcnseg.data import build_dataset, build_transforms
    from fcnseg.engine.checkpoint import load_model, read_checkpoint
    from fcnseg.engine.evaluation import evaluate_with_matrix, json_safe
    from fcnseg.io.devices import resolve_device
    from fcnseg.metrics import format_table
    from fcnseg.plots import MatplotlibMissing, iou_bar_chart
    from fcnseg.viz import confusion_matrix_image

    ckpt_path = Path(args.checkpoint)
    ckpt = read_checkpoint(ckpt_path)
    data_cfg = (ckpt.get("train_config") or {}).get("data") or {}
    eval_cfg = (ckpt.get("train_config") or {}).get("eval") or {}
    name = args.dataset or data_cfg.get("dataset")
    if not name:
        raise ValueError(f"{ckpt_path} holds no training recipe: pass --dataset and --root")
    same = args.dataset is None or args.dataset == data_cfg.get("dataset")
    root = args.root or (data_cfg.get("root") if same else None)
    split = args.split or (data_cfg.get("val_split") if same else None) or "val"
    options = dict(data_cfg.get("options") or {}) if same else {}
    if args.data_options:
        options = _parse_options(args.data_options)
    device = resolve_device(args.device)
    model = load_model(ckpt_path, map_location=device)
    transforms = build_transforms(
        train=False,
        preprocess=model.preprocess,
        base_size=data_cfg.get("base_size") if same else None,
    )
    dataset = build_dataset(name, root, split, transforms=transforms, **options)
    if dataset.num_classes != model.num_classes:
        raise ValueError(
            f"{name} has {dataset.num_classes} classes but {ckpt_path} predicts {model.num_classes}"
        )
    tta = args.tta if args.tta is not None else eval_cfg.get("tta")
    dilation = args.boundary_dilation or eval_cfg.get("boundary_dilation")
    scores, cm = evaluate_with_matrix(
        model,
        dataset,
        batch_size=args.batch_size,
        device=device,
        tta=tta,
        precision=args.precision,
        boundary_dilation=dilation,
        progress=not args.no_progress,
        num_workers=args.workers,
    )
    record = precision_record(resolve_precision(args.precision, device), device)
    print(f"{ckpt_path} on {name} {split} ({len(dataset)} images), {_describe(record)}")
    print(format_table(scores, model.class_names))
    out = Path(args.out) if args.out else ckpt_path.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(json_safe(scores), indent=2) + "\n")
    confusion_matrix_image(cm.mat, model.class_names).save(out / "confusion_matrix.png")
    written = [out / "metrics.json", out / "confusion_matrix.png"]
    try:
        written.append(
            iou_bar_chart(
                scores["iou"],
                model.class_names,
                out / "iou.png",
                mean_iou=scores["mean_iou"],
                title=f"{ckpt_path.name} on {name} {split}",
            )
        )
    except MatplotlibMissing as e:  # the scores are the result; the chart is optional
        print(f"fcnseg eval: note: iou.png not written: {e}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
