"""Image reading (header first, then a bounded decode) and atomic file writes.

Every image file the runtime reads (the ``segment`` CLI, the service's replay source, the bench)
goes through :func:`read_image`, which applies one rule set:

* the file must be a regular file (a directory, FIFO, device, dangling symlink or symlink loop
  is reported as what it is);
* the pixel size is read from the header before anything is decoded, and frames above
  ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`, 50 megapixels) are refused, so a small file
  whose header claims 30000x30000 cannot make the decoder allocate gigabytes; formats whose
  header this module cannot read are refused rather than decoded blind;
* EXIF orientation is applied, as ``cv2.imread(path)`` does by default, so a portrait phone
  photo is read upright (the same array ``cv2.imread`` gives to an API caller);
* the pixels are exactly those of ``cv2.imread(path)`` (its default ``IMREAD_COLOR``): gray,
  16-bit and alpha images become (H, W, 3) uint8 BGR (16-bit PNGs keep the top byte, alpha is
  dropped, float HDR/PFM/EXR are mapped to 8 bits by OpenCV).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError
from edge.paths import check_regular_file

# Read once at import (os.umask can only be read by setting it): files we create get the
# permissions a plain open() would give, not mkstemp's private 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

MAX_IMAGE_PIXELS = 50_000_000
"""Default pixel limit of :func:`read_image`: a 12 MP Pi camera still passes, and the decoded
frame (150 MB as BGR) leaves room for the model on a 2 GB Pi."""

IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "BMP": (".bmp", ".dib"),
    "WebP": (".webp",),
    "TIFF": (".tif", ".tiff"),
    "GIF": (".gif",),
    "JPEG 2000": (".jp2", ".j2k", ".j2c"),
    "AVIF": (".avif",),
    "PNM/PAM/PFM": (".pbm", ".pgm", ".ppm", ".pxm", ".pnm", ".pam", ".pfm"),
    "Sun raster": (".sr", ".ras"),
    "Radiance HDR": (".hdr", ".pic"),
    "OpenEXR": (".exr",),
}
"""The formats whose header :func:`image_size` reads, and their file extensions: the one table
behind every folder, glob and replay listing (``segment`` sources, the service's replay source,
the service bench)."""

IMAGE_EXTS: frozenset[str] = frozenset(e for exts in IMAGE_FORMATS.values() for e in exts)
"""Lower-case file extensions read as images (the reader itself goes by the header)."""

SUPPORTED_FORMATS = ", ".join(IMAGE_FORMATS)

_HEADER_SCAN_BYTES = 1 << 20
"""How far into a file the box/attribute formats (AVIF, JPEG 2000, HDR, EXR) are searched."""


# --------------------------------------------------------------------------------------------
# header sniffing: (width, height) without decoding
# --------------------------------------------------------------------------------------------


class _BadHeader(Exception):
    """The header is recognised but truncated or inconsistent."""


def _read_exact(fh: IO[bytes], n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise _BadHeader("truncated header")
    return data


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(fh: IO[bytes]) -> tuple[int, int]:
    fh.seek(2)
    while True:
        byte = _read_exact(fh, 1)
        if byte != b"\xff":
            raise _BadHeader("JPEG marker expected")
        marker = 0xFF
        while marker == 0xFF:  # fill bytes
            marker = _read_exact(fh, 1)[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # standalone markers
            continue
        if marker in (0xD9, 0xDA):  # EOI / start of scan before any frame header
            raise _BadHeader("no JPEG frame header (SOFn) before the image data")
        (length,) = struct.unpack(">H", _read_exact(fh, 2))
        if length < 2:
            raise _BadHeader("bad JPEG segment length")
        if marker in _JPEG_SOF:
            _precision, h, w = struct.unpack(">BHH", _read_exact(fh, 5))
            return w, h
        fh.seek(length - 2, os.SEEK_CUR)


def _tiff_size(fh: IO[bytes], head: bytes) -> tuple[int, int]:
    end = "<" if head[:2] == b"II" else ">"
    (version,) = struct.unpack(end + "H", head[2:4])
    big = version == 43
    if big:
        (ifd,) = struct.unpack(end + "Q", head[8:16])
        fh.seek(ifd)
        (count,) = struct.unpack(end + "Q", _read_exact(fh, 8))
        entry, value_at = 20, 12
    else:
        (ifd,) = struct.unpack(end + "I", head[4:8])
        fh.seek(ifd)
        (count,) = struct.unpack(end + "H", _read_exact(fh, 2))
        entry, value_at = 12, 8
    if count > 4096:
        raise _BadHeader("implausible TIFF directory")
    table = _read_exact(fh, count * entry)
    found: dict[int, int] = {}
    for i in range(count):
        e = table[i * entry : (i + 1) * entry]
        tag, typ = struct.unpack(end + "HH", e[:4])
        if tag not in (256, 257):
            continue
        value = e[value_at:]
        fmt = {3: "H", 4: "I", 16: "Q"}.get(typ)
        if fmt is None:
            raise _BadHeader(f"TIFF tag {tag} has type {typ}")
        (found[tag],) = struct.unpack(end + fmt, value[: struct.calcsize(fmt)])
    if 256 not in found or 257 not in found:
        raise _BadHeader("TIFF without ImageWidth/ImageLength")
    return found[256], found[257]


def _pnm_size(head: bytes) -> tuple[int, int]:
    if head[:2] == b"P7":
        w = re.search(rb"\nWIDTH\s+(\d+)", head)
        h = re.search(rb"\nHEIGHT\s+(\d+)", head)
        if not (w and h):
            raise _BadHeader("PAM without WIDTH/HEIGHT")
        return int(w.group(1)), int(h.group(1))
    text = re.sub(rb"#[^\n]*", b" ", head[2:])
    tokens = text.split()
    if len(tokens) < 2 or not (tokens[0].isdigit() and tokens[1].isdigit()):
        raise _BadHeader("PNM/PFM without width and height")
    return int(tokens[0]), int(tokens[1])


def _hdr_size(head: bytes) -> tuple[int, int]:
    cut = head.find(b"\n\n")
    if cut < 0:
        raise _BadHeader("Radiance header without a resolution line")
    line = head[cut + 2 :].split(b"\n", 1)[0].split()
    if len(line) != 4 or not (line[1].isdigit() and line[3].isdigit()):
        raise _BadHeader("bad Radiance resolution line")
    n1, n2 = int(line[1]), int(line[3])
    return (n2, n1) if line[0].endswith(b"Y") else (n1, n2)


def _box_sizes(head: bytes, box: bytes, order: str) -> list[tuple[int, int]]:
    """Every ``box`` (``ispe``, ``ihdr``) found in ``head`` -> (width, height)."""
    sizes = []
    for m in re.finditer(re.escape(box), head):
        at = m.end()
        if box == b"ispe":  # version/flags, width, height
            data = head[at + 4 : at + 12]
        else:  # ihdr: height, width
            data = head[at : at + 8]
        if len(data) == 8:
            a, b = struct.unpack(">II", data)
            sizes.append((a, b) if order == "wh" else (b, a))
    return sizes


def _exr_size(head: bytes) -> tuple[int, int]:
    at = head.find(b"dataWindow\x00box2i\x00")
    if at < 0:
        raise _BadHeader("OpenEXR without dataWindow")
    data = head[at + 17 + 4 : at + 17 + 4 + 16]
    if len(data) != 16:
        raise _BadHeader("truncated OpenEXR dataWindow")
    x0, y0, x1, y1 = struct.unpack("<iiii", data)
    return x1 - x0 + 1, y1 - y0 + 1


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header (nothing is decoded).

    Raises:
        InputError: Not a regular file, unreadable, an unknown format (see
            :data:`SUPPORTED_FORMATS`) or a corrupt header.
    """
    path = check_regular_file(path, "image")
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if not head:
                raise InputError(f"image: {str(path)!r} is empty (0 bytes)")
            size = _sniff(fh, head)
    except _BadHeader as exc:
        raise InputError(
            f"image: {str(path)!r} is not a readable image (corrupt header: {exc})"
        ) from None
    except OSError as exc:
        raise InputError(f"image: {str(path)!r} cannot be read: {exc.strerror}") from None
    if size is None:
        raise InputError(
            f"image: {str(path)!r} is not a readable image (unknown format; reads "
            f"{SUPPORTED_FORMATS})"
        )
    w, h = size
    if w <= 0 or h <= 0:
        raise InputError(f"image: {str(path)!r} is not a readable image (header says {w}x{h})")
    return w, h


def _sniff(fh: IO[bytes], head: bytes) -> tuple[int, int] | None:
    """Dispatch on the magic bytes; ``None`` for an unknown format."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if head[12:16] != b"IHDR":
            raise _BadHeader("PNG without IHDR")
        w, h = struct.unpack(">II", head[16:24])
        return w, h
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(fh)
    if head.startswith(b"BM") and len(head) >= 26:
        (dib,) = struct.unpack("<I", head[14:18])
        if dib == 12:  # OS/2 BITMAPCOREHEADER
            w, h = struct.unpack("<HH", head[18:22])
            return w, h
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        w, h = struct.unpack("<HH", head[6:10])
        return w, h
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        chunk = head[12:16]
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", head[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            (bits,) = struct.unpack("<I", head[21:25])
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            w = int.from_bytes(head[24:27], "little") + 1
            h = int.from_bytes(head[27:30], "little") + 1
            return w, h
        raise _BadHeader(f"WebP chunk {chunk!r}")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff_size(fh, head)
    if head[:4] == b"\x59\xa6\x6a\x95":  # Sun raster
        w, h = struct.unpack(">II", head[4:12])
        return w, h
    if head[:1] == b"P" and head[1:2] in b"1234567fF" and head[1:2]:
        fh.seek(0)
        return _pnm_size(fh.read(4096))
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        fh.seek(0)
        return _hdr_size(fh.read(_HEADER_SCAN_BYTES))
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n"):  # JPEG 2000 (JP2)
        fh.seek(0)
        sizes = _box_sizes(fh.read(_HEADER_SCAN_BYTES), b"ihdr", "hw")
        if not sizes:
            raise _BadHeader("JP2 without ihdr")
        return sizes[0]
    if head.startswith(b"\xff\x4f\xff\x51"):  # raw JPEG 2000 codestream (SIZ)
        xs, ys, xo, yo = struct.unpack(">IIII", head[8:24])
        return xs - xo, ys - yo
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"mif1", b"msf1"):
        fh.seek(0)
        sizes = _box_sizes(fh.read(_HEADER_SCAN_BYTES), b"ispe", "wh")
        if not sizes:
            raise _BadHeader("AVIF without ispe")
        # the largest declared size (grid canvas, not a tile or thumbnail) bounds the decode
        return max(sizes, key=lambda s: s[0] * s[1])
    if head[:4] == b"\x76\x2f\x31\x01":  # OpenEXR
        fh.seek(0)
        return _exr_size(fh.read(_HEADER_SCAN_BYTES))
    return None


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.1f} megapixels"


def read_image(path: str | Path, max_pixels: int | None = MAX_IMAGE_PIXELS) -> NDArray[np.uint8]:
    """Read an image file as (H, W, 3) uint8 BGR, EXIF orientation applied.

    The rules (header first, pixel limit, EXIF, conversions) are in the module docstring.

    Args:
        path: The image file.
        max_pixels: Refuse images with more pixels than this (from the header, before
            decoding); ``None`` = no limit (OpenCV's own 2**30 cap still holds).

    Raises:
        InputError: Missing file, not a regular file, empty, unknown format, corrupt, or above
            ``max_pixels``; the message names the file (and its size and the limit).
    """
    path = Path(path)
    w, h = image_size(path)
    if max_pixels is not None and w * h > max_pixels:
        raise InputError(
            f"image: {str(path)!r} is {w}x{h} ({_megapixels(w * h)}), above the limit of "
            f"{_megapixels(max_pixels)} ({max_pixels} pixels); downscale it or raise the limit"
        )
    # IMREAD_COLOR is cv2.imread's default: EXIF orientation, 3 channels, 8 bits.
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise InputError(
            f"image: {str(path)!r} is not a readable image ({str(exc).strip()[:200]})"
        ) from None
    if image is None or image.size == 0:
        raise InputError(f"image: {str(path)!r} is not a readable image (corrupt or unsupported)")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"image: {str(path)!r} decoded as {image.dtype} {image.shape}, expected 8-bit color"
        )
    return np.ascontiguousarray(image)


def resolve_output(path: str | Path) -> tuple[Path, bool]:
    """Where an output named ``path`` really goes, and whether it is written in place.

    * a symlink (or a chain of them) is followed: the bytes go to the file it points to, which
      is replaced atomically in *its* directory (the link stays a link);
    * an existing device, FIFO or socket is written in place (``in_place`` True): renaming a
      temp file over ``/dev/stdout`` or a named pipe would replace the node by a regular file;
    * anything else (a regular file or a new name) is replaced atomically where it is.

    Args:
        path: The output path as the user gave it.

    Returns:
        ``(target, in_place)``.

    Raises:
        OSError: ``path`` is a directory or a symlink loop (naming ``path``).
    """
    path = Path(path)
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _named(exc, path) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    if st is not None and not stat.S_ISREG(st.st_mode):
        return path, True
    if path.is_symlink():
        return Path(os.path.realpath(path)), False
    return path, False


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` re-made to name the user's ``path`` (not a temp file or a resolved link)."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write`` on a temp file next to the real target, fsync, rename over it.

    The target is :func:`resolve_output`'s: a symlink is written through (the file it points
    to is replaced, in that file's directory), a device or FIFO is written in place. An
    existing file keeps its permission bits. Errors name ``path`` as given.
    """
    path = Path(path)
    target, in_place = resolve_output(path)
    if in_place:
        try:
            with open(target, "wb") as fh:
                write(fh)
                fh.flush()
        except OSError as exc:
            raise _named(exc, path) from None
        return path
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _named(exc, path) from None
        raise
    return path


class PendingFile:
    """An output for writers that need a file name (``cv2.VideoWriter``), committed at the end.

    :attr:`path` is a temp file next to :func:`resolve_output`'s target (or, for a device or
    FIFO, the target itself); :meth:`commit` renames it over the target, :meth:`discard`
    removes it. Errors name the user's path.

    Args:
        path: The output path as the user gave it.
        suffix: The temp file's ending (writers pick the container by extension, e.g. ``.mp4``).
    """

    def __init__(self, path: str | Path, suffix: str = ".tmp") -> None:
        self.user_path = Path(path)
        self.target, in_place = resolve_output(self.user_path)
        self.path = self.target
        self._pending = not in_place
        if in_place:
            return
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.target.name}.", suffix=suffix, dir=self.target.parent
            )
            os.close(fd)
            os.chmod(tmp, 0o666 & ~_UMASK)
        except OSError as exc:
            raise _named(exc, self.user_path) from None
        self.path = Path(tmp)

    def commit(self) -> None:
        """Move the written temp file onto the target (once; a no-op in place)."""
        if not self._pending:
            return
        self._pending = False
        try:
            with open(self.path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.path, self.target)
        except OSError as exc:
            self.discard()
            raise _named(exc, self.user_path) from None

    def discard(self) -> None:
        """Remove the temp file (the target stays as it was)."""
        self._pending = False
        if self.path != self.target:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes to ``path`` via a temp file in the same directory, fsync and rename.

    A crash or a full disk leaves either the old file or none, never a truncated one.
    """
    return _atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (see :func:`atomic_write_bytes`), streamed to the file.

    Streaming matters for large results: ``json.dumps`` with ``indent`` builds the whole text
    from a list of small strings first, several times the file's size in memory.
    """

    def write(fh: IO[bytes]) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="\n", write_through=False)
        json.dump(obj, text, indent=1)
        text.write("\n")
        text.flush()
        text.detach()  # leave fh open for the fsync

    return _atomic_write(path, write)


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
