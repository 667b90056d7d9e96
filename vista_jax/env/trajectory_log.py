"""Trajectory logs: one JSON line per finished trajectory, images as PNG files beside it.

A PIL image anywhere in a record is written once (named by its content hash, so the G copies
of a GRPO group share one file) to `<log stem>_images/` and replaced by
`{"$image": "<relative path>"}`; `read_trajectories` turns those back into paths or images.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any

from PIL import Image

IMAGE_KEY = "$image"


class TrajectoryWriter:
    """Appends trajectory records to a JSONL file (creating its directory)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        root = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(root, exist_ok=True)
        stem = os.path.splitext(os.path.basename(self.path))[0]
        self.image_dir_rel = f"{stem}_images"
        self.image_dir = os.path.join(root, self.image_dir_rel)
        self.f = open(self.path, "a", encoding="utf-8")

    def _save_image(self, image: Image.Image) -> dict[str, str]:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
        name = hashlib.sha256(data).hexdigest()[:20] + ".png"
        rel = f"{self.image_dir_rel}/{name}"
        full = os.path.join(self.image_dir, name)
        if not os.path.exists(full):
            os.makedirs(self.image_dir, exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
        return {IMAGE_KEY: rel}

    def _encode(self, value: Any) -> Any:
        if isinstance(value, Image.Image):
            return self._save_image(value)
        if isinstance(value, dict):
            return {str(k): self._encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._encode(v) for v in value]
        return value

    def write(self, record: dict[str, Any]) -> None:
        """Appends `record`; values JSON cannot hold (other than images) are written as str."""
        self.f.write(json.dumps(self._encode(record), default=str) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _decode(value: Any, root: str, load_images: bool) -> Any:
    if isinstance(value, dict):
        if set(value) == {IMAGE_KEY}:
            path = os.path.join(root, value[IMAGE_KEY])
            if not load_images:
                return path
            with Image.open(path) as im:
                return im.copy()
        return {k: _decode(v, root, load_images) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, root, load_images) for v in value]
    return value


def iter_trajectories(path: str | os.PathLike, *, load_images: bool = False) -> Iterator[dict]:
    """Yields the records of a trajectory log; images come back as absolute paths, or as PIL
    images with `load_images=True`."""
    root = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield _decode(json.loads(line), root, load_images)


def read_trajectories(path: str | os.PathLike, *, load_images: bool = False) -> list[dict]:
    return list(iter_trajectories(path, load_images=load_images))
