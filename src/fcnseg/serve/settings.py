"""The server's knobs: queue and batch sizes, request limits, device, warm-up size."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

__all__ = ["ServeSettings"]


@dataclass(frozen=True)
class ServeSettings:
    """How the HTTP app batches, limits and runs requests.

    Attributes:
        max_batch: most same-size images in one forward pass.
        max_wait_ms: how long the oldest waiting image may wait for others of its size before
            its batch runs (measured from its arrival, so a busy worker adds no extra wait).
        max_queue: most images waiting for the worker (the running batch not counted); one
            more is answered 503 with ``Retry-After``.
        max_bytes: largest accepted upload (raw body, or the file part of a multipart form).
        max_pixels: largest accepted image, width x height, checked before decoding pixels.
        device: ``"auto"`` (GPU when there is one), ``"cpu"``, ``"cuda:0"``, ...
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (GPU) or ``"auto"`` (bf16 where the
            hardware has it): the inference core's precision policy.
        warmup_size: ``(H, W)`` of the blank image run once at start-up; ``/health`` says
            ready only after it.
        model_name: the name in ``POST /predictions/{model_name}``; ``None``: ``arch_backbone``.
        overlay_alpha: default weight of the class colours in ``format=overlay``.
        retry_after_s: the ``Retry-After`` header of 503 answers.

    Raises:
        ValueError: a value out of range.
    """

    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    device: str = "auto"
    precision: str = "fp32"
    warmup_size: tuple[int, int] = (360, 480)
    model_name: str | None = None
    overlay_alpha: float = 0.5
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "warmup_size", tuple(int(v) for v in self.warmup_size))
        checks = [
            (self.max_batch >= 1, "max_batch must be at least 1"),
            (self.max_wait_ms >= 0, "max_wait_ms must not be negative"),
            (self.max_queue >= 0, "max_queue must not be negative"),
            (self.max_bytes >= 1, "max_bytes must be positive"),
            (self.max_pixels >= 1, "max_pixels must be positive"),
            (len(self.warmup_size) == 2 and min(self.warmup_size) >= 1, "bad warmup_size"),
            (0.0 <= self.overlay_alpha <= 1.0, "overlay_alpha must be in [0, 1]"),
            (self.retry_after_s >= 0, "retry_after_s must not be negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_json(self) -> str:
        """The settings as a JSON object (how ``--workers`` hands them to each process)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        """Inverse of :meth:`to_json`. Raises ``ValueError`` on unknown keys or bad values."""
        data = json.loads(text)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown serve settings {sorted(unknown)}")
        return cls(**data)
