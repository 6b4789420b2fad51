"""The peers fcnseg is compared with; the loaders live in ``fcnseg.bench`` so that
``fcnseg bench --peers`` works from an installed package, and are re-exported here.

- pytorch-fcn's ``torchfcn`` FCN32s / FCN16s / FCN8s (the faithful port of the Caffe reference,
  conv1_1 padding 100): ``pip install --no-deps torchfcn``. Its package ``__init__`` (trainer,
  datasets: scikit-image, pytz) is bypassed and its ``fcn`` helper module is replaced by a stub
  in ``sys.modules`` (never in site-packages): see ``fcnseg.bench._torchfcn_models``.
- torchvision's ``fcn_resnet50(weights=None, weights_backbone=None)``.

Both are benchmark-only extras (``pip install -e .[bench]`` then ``pip install --no-deps
torchfcn``), never runtime dependencies of fcnseg.
"""

from fcnseg.bench import (
    PEERS,
    PeerUnavailable,
    build_peer,
    peers_for,
    torchfcn_model,
    torchvision_fcn_resnet50,
)

__all__ = [
    "PEERS",
    "PeerUnavailable",
    "build_peer",
    "peers_for",
    "torchfcn_model",
    "torchvision_fcn_resnet50",
]
