"""Image-classification data: rows ``{"path" or "pixels", "label"}``.

- a folder: one sub-folder per class, named by the class, holding image files (``IMAGE_EXTS``); files of
  other kinds are not read (their count is noted); an image that does not decode is invalid;
- ``.jsonl``: one object per line with the image file under ``image_column`` (relative to the ``.jsonl``'s
  folder, or absolute) and the label under ``label_column``;
- ``digits``: the 1,797 handwritten digits (8x8, 17 grey levels, 10 classes) shipped as
  ``sklearn/datasets/data/digits.csv.gz`` in the scikit-learn wheel (read as a file: scikit-learn itself
  is never imported), split 80/10/10 by ``split_seed``.

An invalid row (a missing or empty image column, a file that is missing or not an image, a missing label)
is an error naming the file and line (the image file, for a folder), or skipped with ``--drop-invalid``.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from typing import Iterable

import numpy as np

from leap_fx.data.files import label_value
from leap_fx.tasks.rows import Rows, checked_rows, jsonl_rows, split_rows

__all__ = ["read_images", "read_digits", "open_image", "IMAGE_EXTS", "DIGITS", "DIGITS_INSTALL", "class_names"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DIGITS = ("digits", "sklearn-digits")
DIGITS_INSTALL = "pip install --no-deps scikit-learn"


def open_image(row: dict):
    """The row's image as a PIL image (from its file, or its ``pixels`` array)."""
    from PIL import Image  # import weight: Pillow (matplotlib's dependency)
    if "pixels" in row:
        return Image.fromarray(np.asarray(row["pixels"], dtype=np.uint8))
    with Image.open(row["path"]) as img:
        img.load()
        return img


def _checked_image(path: str) -> tuple:
    if not os.path.isfile(path):
        return None, f"image file {path!r} not found"
    try:
        open_image({"path": path})
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, ValueError ...
        return None, f"{path!r} is not a readable image ({type(err).__name__}: {str(err)[:120]})"
    return path, None


def _folder_rows(root: str) -> Iterable[tuple[str, object]]:
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class sub-folders: put each class's images in a folder named by the class")
    for label in classes:
        for name in sorted(os.listdir(os.path.join(root, label))):
            path = os.path.abspath(os.path.join(root, label, name))
            if os.path.isfile(path) and name.lower().endswith(IMAGE_EXTS):
                yield path, {"image": path, "label": label}


def _parse(row: dict, image_column: str, label_column: str, base: str) -> tuple:
    img, label = row.get(image_column), label_value(row.get(label_column))
    if not isinstance(img, str) or not img.strip():
        return None, f"no image file in column {image_column!r} (columns: {sorted(row)})"
    if label is None:
        return None, f"missing, empty or null label in column {label_column!r}"
    path, why = _checked_image(img if os.path.isabs(img) else os.path.join(base, img))
    return ({"path": path, "label": label}, None) if why is None else (None, why)


def read_images(path: str, image_column: str = "image", label_column: str = "label",
                drop_invalid: bool = False) -> Rows:
    """The rows of an image folder or ``.jsonl`` (module doc), each image checked to decode."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data path not found: {path!r}")
    if os.path.isdir(path):
        rows = checked_rows(path, _folder_rows(path), lambda r: _parse(r, "image", "label", path), drop_invalid)
        skipped = sum(1 for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))
                      for f in os.listdir(os.path.join(path, d)) if not f.lower().endswith(IMAGE_EXTS))
        rows.source["other_files_not_read"] = skipped
        return rows
    if path.lower().endswith(".jsonl"):
        base = os.path.dirname(os.path.abspath(path))
        return checked_rows(path, jsonl_rows(path), lambda r: _parse(r, image_column, label_column, base),
                            drop_invalid)
    raise ValueError(f"unsupported image data {path!r}: pass a folder of class sub-folders or a .jsonl file")


def digits_path() -> str:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the digits data ships in the scikit-learn wheel, which is not installed: "
                                  f"{DIGITS_INSTALL} (or pass --data FOLDER)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "digits.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; reinstall with: {DIGITS_INSTALL} --force-reinstall")
    return path


def read_digits(seed: int = 0) -> list[Rows]:
    """The 8x8 digits as rows with ``pixels`` (grey levels 0..16 scaled to 0..255), split 80/10/10."""
    path = digits_path()
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",")
    rows = [{"pixels": (r[:64].reshape(8, 8) * (255.0 / 16.0)).round().astype(np.uint8), "label": str(int(r[64]))}
            for r in table]
    return split_rows(Rows(rows, {"path": path, "rows_read": len(rows), "rows_skipped": 0, "skipped": []}), seed)


def class_names(rows: Rows) -> list[str]:
    """Sorted labels (numbers in numeric order)."""
    names = {r["label"] for r in rows.rows}
    return sorted(names, key=lambda s: (0, float(s), s) if s.replace(".", "", 1).lstrip("-").isdigit() else (1, 0, s))
