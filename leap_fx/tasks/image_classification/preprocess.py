"""Pixels for an image classifier: through the model folder's image processor (``preprocessor_config.json``,
transformers' ``AutoImageProcessor``) when it has one, else resized to the config's ``image_size`` (bilinear),
scaled to [0, 1] and normalised with the config's ``image_mean`` / ``image_std`` (0.5 each when the config
has none: the ViT image processor's defaults). ``settings()`` is what ``model.onnx`` carries so a consumer
feeds it the same way: size, channels, rescale factor, mean, std, resampling.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from leap_fx.tasks.image_classification.data import open_image

__all__ = ["ImagePrep", "image_prep"]

DEFAULT_MEAN_STD = 0.5


def _pair(size) -> tuple[int, int]:
    h, w = getattr(size, "height", None), getattr(size, "width", None)  # transformers' SizeDict
    if h and w:
        return int(h), int(w)
    if getattr(size, "shortest_edge", None):
        return int(size.shortest_edge), int(size.shortest_edge)
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        edge = size.get("shortest_edge") or size.get("longest_edge")
        return int(edge), int(edge)
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def _triple(v, channels: int) -> list[float]:
    v = [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)] * channels
    return v if len(v) == channels else [v[0]] * channels


@dataclass
class ImagePrep:
    """How images become ``pixel_values [N, C, H, W]`` (module doc)."""

    size: tuple[int, int]
    channels: int
    mean: list[float]
    std: list[float]
    rescale: float = 1 / 255
    source: str = "config"                 # "preprocessor_config.json" or "config"
    processor: object = field(default=None, repr=False)

    def pixels(self, rows: list, batch: int = 256) -> torch.Tensor:
        mode = "RGB" if self.channels == 3 else "L"
        out = []
        for i in range(0, len(rows), batch):
            images = [open_image(r).convert(mode) for r in rows[i:i + batch]]
            out.append(self._processed(images) if self.processor is not None else self._normalised(images))
        return torch.cat(out) if out else torch.zeros(0, self.channels, *self.size)

    def _processed(self, images) -> torch.Tensor:
        return self.processor(images, return_tensors="pt")["pixel_values"].float()

    def _normalised(self, images) -> torch.Tensor:
        from PIL import Image  # import weight: Pillow
        h, w = self.size
        arr = np.stack([np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32) for img in images])
        arr = arr[..., None] if arr.ndim == 3 else arr
        arr = (arr * self.rescale - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    def settings(self) -> dict:
        return {"image_size": list(self.size), "num_channels": self.channels, "image_mean": self.mean,
                "image_std": self.std, "rescale_factor": self.rescale, "resample": "bilinear",
                "input_layout": "NCHW, RGB" if self.channels == 3 else "NCHW, grey",
                "preprocessing": self.source}


def image_prep(folder: Optional[str], model_config) -> ImagePrep:
    """The folder's image processor, else the config's size / channels / normalisation (module doc)."""
    channels = int(getattr(model_config, "num_channels", 3) or 3)
    if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
        from transformers import AutoImageProcessor  # import weight: transformers
        proc = AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
        size = _pair(getattr(proc, "size", None) or getattr(model_config, "image_size", 224))
        mean = _triple(getattr(proc, "image_mean", DEFAULT_MEAN_STD), channels) if getattr(proc, "do_normalize", True) \
            else [0.0] * channels
        std = _triple(getattr(proc, "image_std", DEFAULT_MEAN_STD), channels) if getattr(proc, "do_normalize", True) \
            else [1.0] * channels
        rescale = float(getattr(proc, "rescale_factor", 1 / 255)) if getattr(proc, "do_rescale", True) else 1.0
        return ImagePrep(size, channels, mean, std, rescale, "preprocessor_config.json", proc)
    size = _pair(getattr(model_config, "image_size", 224))
    mean = _triple(getattr(model_config, "image_mean", DEFAULT_MEAN_STD), channels)
    std = _triple(getattr(model_config, "image_std", DEFAULT_MEAN_STD), channels)
    return ImagePrep(size, channels, mean, std)
