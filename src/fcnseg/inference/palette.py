"""The colours a model's label maps are drawn with."""

from __future__ import annotations

from torch import nn

__all__ = ["model_palette"]


def model_palette(model: nn.Module) -> list[tuple[int, int, int]]:
    """Colours for the model's classes: the palette stored with the model (``build_model``
    stores one); for a checkpoint written before palettes were stored, the dataset's own
    palette when its class names are those of a known dataset, else
    :func:`fcnseg.data.palette_for`."""
    from fcnseg.data import palettes

    config = getattr(model, "config", {}) or {}
    if config.get("palette"):
        return [tuple(int(v) for v in c) for c in config["palette"]]
    names = config.get("class_names")
    num_classes = int(config.get("num_classes") or getattr(model, "num_classes", 21))
    if names:
        from fcnseg.data.cityscapes import CITYSCAPES_CLASSES
        from fcnseg.data.shapes import SHAPES_CLASSES, SHAPES_PALETTE

        known = {
            tuple(SHAPES_CLASSES): SHAPES_PALETTE,
            tuple(CITYSCAPES_CLASSES): palettes.CITYSCAPES_PALETTE,
        }
        if tuple(names) in known:
            return list(known[tuple(names)])
    return palettes.palette_for(num_classes)
