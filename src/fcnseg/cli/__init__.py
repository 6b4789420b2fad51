"""The ``fcnseg`` command line. One module per command, each calling the public Python API.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``. Errors a user
can fix (bad data, bad config, bad checkpoint) print one line naming the file and the problem
and exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

# command name -> (module under fcnseg.cli, one-line help)
COMMANDS = {
    "demo": ("demo", "train FCN-32s/16s/8s on the embedded shapes set, evaluate, write a report"),
    "train": ("train", "train from a YAML recipe (--set key=value overrides)"),
    "eval": ("evaluate", "evaluate a checkpoint: the paper's four metrics + boundary IoU"),
    "check-data": ("check_data", "validate every image/mask pair of a dataset before a long run"),
    "predict": ("predict", "label images with a trained model"),
    "export": ("export", "export a checkpoint to ONNX, TorchScript or safetensors"),
    "heatmap": ("heatmap", "class heatmap of a convolutionalized classifier (Section 3.1)"),
    "compare": ("compare", "coarse vs fine: input | each model | ground truth (Figure 4)"),
    "bench": ("bench", "latency, throughput and memory of a model"),
    "serve": ("serve", "serve a model over HTTP: JSON/PNG API and a web page"),
    "plot": ("plot", "learning curves (loss, val mean IU) of existing training runs"),
}


# optional dependency (top-level module) -> the pyproject extra that installs it
OPTIONAL_MODULES = {
    "onnx": "export",
    "onnxruntime": "export",
    "safetensors": "export",
    "matplotlib": "plots",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "timm": "timm",
    "tensorboard": "logging",
}


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input, not a bug: reported in one line, exit code 2."""
    from fcnseg.config import ConfigError
    from fcnseg.io.files import CheckpointError
    from fcnseg.plots import MatplotlibMissing

    return (
        ConfigError,
        CheckpointError,
        MatplotlibMissing,
        ValueError,
        FileNotFoundError,
        PermissionError,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnseg", description="Fully Convolutional Networks for semantic segmentation."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"fcnseg.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"fcnseg.cli.{module}":
                raise
            continue  # command not built yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: `fcnseg --debug CMD` and `fcnseg CMD --debug` both work
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("fcnseg: interrupted", file=sys.stderr)
        return 130
    except user_errors() as e:
        return _report(args, e)
    except ModuleNotFoundError as e:
        extra = OPTIONAL_MODULES.get((e.name or "").partition(".")[0])
        if extra is None:
            raise
        return _report(
            args,
            ModuleNotFoundError(
                f"this needs the optional package {e.name!r}: pip install 'fcnseg[{extra}]'"
            ),
        )
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        return _report(args, e)  # disk full: the previous checkpoint is intact (atomic_save)


def _report(args: argparse.Namespace, error: BaseException) -> int:
    """One line naming the problem (the traceback with --debug), exit code 2."""
    if args.debug:
        raise error
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"fcnseg {args.command}: error: {message}", file=sys.stderr)
    return 2
