"""Image reading and atomic file writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError

# Read once at import (os.umask can only be read by setting it): files we create get the
# permissions a plain open() would give, not mkstemp's private 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def read_image(path: str | Path) -> NDArray[np.uint8]:
    """Read an image file as (H, W, 3) uint8 BGR (gray and alpha images are converted).

    Raises:
        InputError: Missing, empty, unreadable or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image: {str(path)!r} does not exist")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"image: {str(path)!r} is empty (0 bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"image: {str(path)!r} is not a readable image (corrupt or unsupported)")
    if image.dtype == np.uint16:  # 16-bit PNG/TIFF: keep the top byte
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise InputError(f"image: {str(path)!r} has unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes to ``path`` via a temp file in the same directory, fsync and rename.

    A crash or a full disk leaves either the old file or none, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def atomic_write_image(path: str | Path, image: NDArray[np.uint8]) -> Path:
    """Encode an image by its file extension and write it atomically."""
    path = Path(path)
    try:
        ok, buf = cv2.imencode(path.suffix or ".png", image)
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"overlay: cannot encode an image as {path.suffix!r}")
    return atomic_write_bytes(path, buf.tobytes())
