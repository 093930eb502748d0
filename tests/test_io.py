"""Tests for image reading, atomic writes and the overlay."""

from __future__ import annotations

import json
import os
import struct
from contextlib import nullcontext as DoesNotRaise

import cv2
import numpy as np
import pytest

from edge.errors import InputError
from edge.io import (
    MAX_IMAGE_PIXELS,
    atomic_write_bytes,
    atomic_write_image,
    atomic_write_json,
    image_size,
    read_image,
)
from edge.overlay import draw_overlay, mask_colors
from edge.types import MaskCrop, Masks

# --------------------------------------------------------------------------------------------
# read_image
# --------------------------------------------------------------------------------------------


def _png_bytes(image):
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param(b"", "empty", id="zero-bytes"),
        pytest.param(
            b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a readable image", id="corrupt-png"
        ),
        pytest.param(b"hello, this is plain text\n" * 10, "not a readable image", id="text-file"),
        pytest.param(
            _png_bytes(np.full((20, 20, 3), 7, np.uint8))[:40],
            "not a readable image",
            id="truncated-png",
        ),
    ],
)
def test_read_image_errors(tmp_path, make, needle):
    path = tmp_path / "some dir" / "frame_01.png"
    path.parent.mkdir()
    if make is not None:
        path.write_bytes(make)
    with pytest.raises(InputError) as excinfo:
        read_image(path)
    msg = str(excinfo.value)
    assert str(path) in msg
    assert needle in msg


def _dir(tmp_path):
    return tmp_path


def _fifo(tmp_path):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def _loop(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def _dangling(tmp_path):
    path = tmp_path / "link.png"
    path.symlink_to(tmp_path / "gone.png")
    return path


def _under_a_file(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    return tmp_path / "file" / "img.png"


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        pytest.param(_dir, "is a directory", id="directory"),
        pytest.param(_fifo, "is a FIFO", id="fifo"),
        pytest.param(_loop, "is a symlink loop", id="symlink-loop"),
        pytest.param(_dangling, "is a dangling symlink to", id="dangling-symlink"),
        pytest.param(_under_a_file, "a parent path is a file", id="parent-is-file"),
        pytest.param(lambda t: pathlib_dev_null(), "is a device", id="device"),
    ],
)
def test_read_image_says_what_a_non_file_is(tmp_path, make, needle):
    """A directory, FIFO (would block a plain open), symlink loop... is named as such."""
    path = make(tmp_path)
    with pytest.raises(InputError) as excinfo:
        read_image(path)
    msg = str(excinfo.value)
    assert needle in msg
    assert "does not exist" not in msg or needle == "does not exist"
    assert str(path) in msg


def pathlib_dev_null():
    from pathlib import Path

    return Path("/dev/null")


_rng = np.random.default_rng(0)
_BGR = _rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
_GRAY = _rng.integers(0, 256, size=(9, 13), dtype=np.uint8)
_BGRA = _rng.integers(0, 256, size=(9, 13, 4), dtype=np.uint8)
_GRAY16 = _rng.integers(0, 65536, size=(9, 13), dtype=np.uint16)
_BGR16 = _rng.integers(0, 65536, size=(9, 13, 3), dtype=np.uint16)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param(_BGR, _BGR, id="bgr"),
        pytest.param(_GRAY, np.repeat(_GRAY[:, :, None], 3, axis=2), id="gray"),
        pytest.param(_BGRA, _BGRA[:, :, :3], id="bgra"),
        pytest.param(
            _GRAY16, np.repeat((_GRAY16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2), id="gray16"
        ),
        pytest.param(_BGR16, (_BGR16 >> 8).astype(np.uint8), id="bgr16"),
    ],
)
def test_read_image_converts_png(tmp_path, image, expected):
    path = tmp_path / "img.png"
    path.write_bytes(_png_bytes(image))
    out = read_image(str(path))  # str paths work too
    assert out.dtype == np.uint8
    assert out.shape == (9, 13, 3)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------------------------
# header sizes and the pixel limit (image bombs)
# --------------------------------------------------------------------------------------------

_SCENE = _rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


def _encoded(ext, image=_SCENE):
    ok, buf = cv2.imencode(ext, image)
    assert ok, ext
    return buf.tobytes()


def _tiff(w, h, big_endian=False):
    """A minimal uncompressed 8-bit gray TIFF header claiming ``w x h`` (no pixel data)."""
    e = ">" if big_endian else "<"
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 8)]
    ifd = struct.pack(e + "H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack(e + ("I" if typ == 4 else "H"), value).ljust(4, b"\0")
        ifd += struct.pack(e + "HHI", tag, typ, count) + packed
    return (b"MM\0*" if big_endian else b"II*\0") + struct.pack(e + "I", 8) + ifd + b"\0" * 4


def _sof_claim(data, w, h):
    """A JPEG whose SOF0 header claims ``w x h`` (the scan data stays the small image's)."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", h, w) + data[at + 9 :]


def _ihdr_claim(data, w, h):
    return data[:16] + struct.pack(">II", w, h) + data[24:]


def _bmp_claim(data, w, h):
    return data[:18] + struct.pack("<ii", w, h) + data[26:]


def _gif(w, h):
    return b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0) + b"\x2c" + b"\0" * 9 + b"\x3b"


def _pnm(w, h):
    return f"P6\n# a comment\n{w} {h}\n255\n".encode() + b"\0" * 64


def _pam(w, h):
    return f"P7\nWIDTH {w}\nHEIGHT {h}\nDEPTH 3\nMAXVAL 255\nENDHDR\n".encode() + b"\0" * 64


def _hdr(w, h):
    return f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode() + b"\0" * 64


def _sun(w, h):
    return b"\x59\xa6\x6a\x95" + struct.pack(">IIIIIII", w, h, 24, w * h * 3, 1, 0, 0) + b"\0" * 64


def _webp_vp8x(w, h):
    body = b"VP8X" + struct.pack("<I", 10) + b"\0" * 4
    body += (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body + b"\0" * 32


def _jp2_claim(data, w, h):
    at = data.index(b"ihdr") + 4
    return data[:at] + struct.pack(">II", h, w) + data[at + 8 :]


@pytest.mark.parametrize(
    "ext", [".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm", ".sr", ".hdr", ".jp2"]
)
def test_image_size_reads_the_header_of_every_encodable_format(tmp_path, ext):
    image = _SCENE if ext != ".pgm" else _SCENE[:, :, 0]
    if ext == ".hdr":
        image = image.astype(np.float32) / 255
    path = tmp_path / f"img{ext}"
    path.write_bytes(_encoded(ext, image))
    assert image_size(path) == (53, 37)
    out = read_image(path)
    assert out.shape == (37, 53, 3)
    np.testing.assert_array_equal(out, cv2.imread(str(path)))  # one rule: cv2.imread's


# (name, file bytes claiming 30000x30000 or more): every header format the reader knows
BOMBS = [
    ("jpeg-30000", lambda: _sof_claim(_encoded(".jpg"), 30000, 30000), "30000x30000"),
    ("png-50000", lambda: _ihdr_claim(_encoded(".png"), 50000, 50000), "50000x50000"),
    ("png-20000", lambda: _ihdr_claim(_encoded(".png"), 20000, 20000), "20000x20000"),
    ("bmp", lambda: _bmp_claim(_encoded(".bmp"), 30000, -30000), "30000x30000"),
    ("gif", lambda: _gif(60000, 60000), "60000x60000"),
    ("webp-vp8x", lambda: _webp_vp8x(30000, 30000), "30000x30000"),
    ("tiff-le", lambda: _tiff(30000, 30000), "30000x30000"),
    ("tiff-be", lambda: _tiff(30000, 30000, big_endian=True), "30000x30000"),
    ("ppm", lambda: _pnm(30000, 30000), "30000x30000"),
    ("pam", lambda: _pam(30000, 30000), "30000x30000"),
    ("hdr", lambda: _hdr(30000, 30000), "30000x30000"),
    ("sun-raster", lambda: _sun(30000, 30000), "30000x30000"),
    ("jp2", lambda: _jp2_claim(_encoded(".jp2"), 30000, 30000), "30000x30000"),
]


@pytest.mark.parametrize(
    ("make", "size"), [(m, s) for _, m, s in BOMBS], ids=[b[0] for b in BOMBS]
)
def test_read_image_refuses_a_bomb_before_decoding(tmp_path, monkeypatch, make, size):
    path = tmp_path / "bomb.img"
    path.write_bytes(make())

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded an image above the pixel limit")

    monkeypatch.setattr(cv2, "imread", no_decode)
    monkeypatch.setattr(cv2, "imdecode", no_decode)
    with pytest.raises(InputError) as excinfo:
        read_image(path)
    msg = str(excinfo.value)
    assert str(path) in msg
    assert size in msg
    assert "limit of 50.0 megapixels" in msg


def test_read_image_pixel_limit_is_inclusive_and_configurable(tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(_encoded(".png"))
    pixels = 53 * 37
    assert read_image(path, max_pixels=pixels).shape == (37, 53, 3)
    assert read_image(path, max_pixels=None).shape == (37, 53, 3)
    with pytest.raises(InputError, match=r"53x37 .*limit of 0\.0 megapixels \(1960 pixels\)"):
        read_image(path, max_pixels=pixels - 1)
    assert MAX_IMAGE_PIXELS == 50_000_000


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        pytest.param(b"\xff\xd8\xff\xd9", "no JPEG frame header", id="jpeg-no-sof"),
        pytest.param(b"\xff\xd8\xff\xe0\x00", "truncated header", id="jpeg-truncated"),
        pytest.param(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDX" + b"\0" * 20, "PNG without IHDR", id="png"),
        pytest.param(b"II*\0\x08\0\0\0\0\0", "without ImageWidth", id="tiff-no-tags"),
        pytest.param(b"RIFF\0\0\0\0WEBPVP8Z" + b"\0" * 20, "WebP chunk", id="webp-chunk"),
        pytest.param(b"P6\nabc def\n", "without width and height", id="ppm-no-size"),
        pytest.param(b"GIF89a\0\0\0\0\0\0\0", "header says 0x0", id="gif-zero"),
        pytest.param(b"\0\0\0\x18ftypheic" + b"\0" * 40, "unknown format", id="heic"),
        pytest.param(b"%PDF-1.4\n" + b"\0" * 40, "unknown format", id="pdf"),
    ],
)
def test_read_image_corrupt_or_unknown_headers(tmp_path, data, needle):
    path = tmp_path / "x.img"
    path.write_bytes(data)
    with pytest.raises(InputError, match="not a readable image") as excinfo:
        read_image(path)
    assert needle in str(excinfo.value)


def _exif_orientation_jpeg(image, orientation):
    """A JPEG with an APP1 Exif segment holding one Orientation (0x0112) tag."""
    tiff = b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    app1 = b"Exif\0\0" + tiff
    jpeg = _encoded(".jpg", image)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


@pytest.mark.parametrize(("orientation", "shape"), [(1, (240, 320, 3)), (6, (320, 240, 3))])
def test_read_image_applies_exif_orientation_like_cv2_imread(tmp_path, orientation, shape):
    """One rule: the CLI, the replay source and cv2.imread (the API example) agree."""
    image = np.zeros((240, 320, 3), np.uint8)
    image[:40, :80] = 255  # a bright block top-left marks the rotation
    path = tmp_path / f"exif-rot{orientation}.jpg"
    path.write_bytes(_exif_orientation_jpeg(image, orientation))
    out = read_image(path)
    assert out.shape == shape
    np.testing.assert_array_equal(out, cv2.imread(str(path)))
    if orientation == 6:  # 90 degrees clockwise: the block moves to the top-right
        assert out[:20, -20:].mean() > 200 and out[:20, :20].mean() < 50


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def _leftovers(directory, name):
    return [p.name for p in directory.iterdir() if p.name != name]


@pytest.mark.parametrize("existing", [None, b"old contents"])
def test_atomic_write_bytes_success(tmp_path, existing):
    path = tmp_path / "sub" / "out.json"
    if existing is not None:
        path.parent.mkdir()
        path.write_bytes(existing)
    ret = atomic_write_bytes(path, b"new contents")
    assert ret == path
    assert path.read_bytes() == b"new contents"
    assert _leftovers(path.parent, "out.json") == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_atomic_write_bytes_failure_keeps_old_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "out.json"
    path.write_bytes(b"old contents")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(path, b"new contents that never land")
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents"
    assert _leftovers(tmp_path, "out.json") == []


def test_atomic_write_bytes_failure_without_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"x" * 100)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_json_and_image(tmp_path):
    obj = {"a": [1, 2.5, "x"], "b": None}
    p = atomic_write_json(tmp_path / "r.json", obj)
    assert json.loads(p.read_text()) == obj
    image = _rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    q = atomic_write_image(tmp_path / "o.png", image)
    np.testing.assert_array_equal(cv2.imread(str(q)), image)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["o.png", "r.json"]


def test_atomic_write_json_streams_the_same_text(tmp_path, monkeypatch):
    """Streamed to the file (bounded memory), byte-identical to ``json.dumps(indent=1)``."""
    obj = {"masks": [{"rle": {"counts": "é\\x" * 50}, "poly": [[1.5, 2]] * 300}], "n": None}
    p = atomic_write_json(tmp_path / "r.json", obj)
    assert p.read_bytes() == (json.dumps(obj, indent=1) + "\n").encode("utf-8")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", boom)  # a failure mid-write keeps the old file
    with pytest.raises(OSError):
        atomic_write_json(tmp_path / "r.json", {"new": 1})
    assert json.loads(p.read_text()) == obj
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.json"]


@pytest.mark.parametrize(
    ("name", "expectation"),
    [
        pytest.param("o.png", DoesNotRaise(), id="png"),
        pytest.param("o.jpg", DoesNotRaise(), id="jpg"),
        pytest.param("o", DoesNotRaise(), id="no-suffix-png"),
        pytest.param(
            "o.notanimageformat",
            pytest.raises(InputError, match="notanimageformat"),
            id="unknown-suffix",
        ),
        pytest.param(
            "o.txt",
            pytest.raises(InputError, match="txt"),
            id="txt-suffix",
        ),
    ],
)
def test_atomic_write_image_suffix(tmp_path, name, expectation):
    image = np.zeros((4, 4, 3), np.uint8)
    with expectation:
        atomic_write_image(tmp_path / name, image)
    if not isinstance(expectation, DoesNotRaise):
        assert list(tmp_path.iterdir()) == []


def test_atomic_write_bytes_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "r.json", b"{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("chain", [1, 2], ids=["link", "link-to-link"])
def test_atomic_write_writes_through_a_symlink_in_the_targets_directory(
    tmp_path, monkeypatch, chain
):
    """The link stays a link; the file it points to is replaced, its temp file beside it."""
    real_dir, link_dir = tmp_path / "real", tmp_path / "links"
    real_dir.mkdir()
    link_dir.mkdir()
    target = real_dir / "out.json"
    target.write_bytes(b"old")
    target.chmod(0o600)
    link = target
    for k in range(chain):
        nxt = link_dir / f"link{k}.json"
        nxt.symlink_to(link)
        link = nxt
    temps: list[str] = []
    real_mkstemp = __import__("tempfile").mkstemp

    def spy(*args, **kwargs):
        temps.append(str(kwargs["dir"]))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr("edge.io.tempfile.mkstemp", spy)
    assert atomic_write_bytes(link, b"new") == link
    assert link.is_symlink() and os.path.realpath(link) == str(target)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600  # an existing file keeps its permissions
    assert temps == [str(real_dir)]
    assert sorted(p.name for p in real_dir.iterdir()) == ["out.json"]


def test_atomic_write_through_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "new.json")
    atomic_write_json(link, {"a": 1})
    assert link.is_symlink() and json.loads((tmp_path / "new.json").read_text()) == {"a": 1}


def test_atomic_write_to_a_fifo_writes_in_place(tmp_path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write_bytes(fifo, b"through the pipe")
    reader.join()
    assert got == [b"through the pipe"]
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_atomic_write_to_a_device_writes_in_place_and_names_it():
    with pytest.raises(OSError, match="/dev/full") as info:
        atomic_write_json("/dev/full", {"a": 1})
    assert info.value.errno == 28
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")
    atomic_write_bytes("/dev/null", b"x")
    assert not os.path.isfile("/dev/null")


def test_atomic_write_refuses_a_directory_naming_it(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        atomic_write_bytes(tmp_path, b"x")


@pytest.mark.parametrize("failing", ["replace", "fsync", "mkstemp"])
def test_atomic_write_errors_name_the_users_path_not_the_temp_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "out.json"

    def boom(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(args[0]) if args else "?")

    if failing == "mkstemp":
        monkeypatch.setattr("edge.io.tempfile.mkstemp", boom)
    else:
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises(PermissionError) as info:
        atomic_write_bytes(path, b"x")
    monkeypatch.undo()
    assert info.value.filename == str(path)
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# overlay
# --------------------------------------------------------------------------------------------


def _result(hw):
    a = np.zeros((6, 8), bool)
    a[1:5, 2:7] = True
    b = np.ones((3, 3), bool)
    return Masks(
        xyxy=np.array([[10, 5, 18, 11], [2, 2, 5, 5]], np.float32),
        confidence=np.array([0.9, 0.5], np.float32),
        crops=(MaskCrop(a, 10, 5), MaskCrop(b, 2, 2)),
        image_hw=hw,
    )


def test_draw_overlay_empty_result_returns_unchanged_copy():
    image = _rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    before = image.copy()
    out = draw_overlay(image, Masks.empty(20, 30), boxes=True)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, image)
    assert out is not image
    out[:] = 0
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("contours", [False, True])
@pytest.mark.parametrize("boxes", [False, True])
def test_draw_overlay_paints_masks_only(contours, boxes):
    image = np.full((20, 30, 3), 100, np.uint8)
    result = _result((20, 30))
    out = draw_overlay(image, result, alpha=0.6, contours=contours, boxes=boxes)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, 100)  # input untouched
    union = result.mask.any(axis=0)
    changed = np.any(out != image, axis=2)
    assert changed[union].mean() > 0.9  # masks are painted
    if not contours and not boxes:
        assert not changed[~union].any()  # nothing outside the masks
        # Fill colour: each mask blended with its own colour.
        colors = mask_colors(2).astype(np.float32)
        expected = (100 * 0.4 + colors[1] * 0.6).astype(np.uint8)
        np.testing.assert_array_equal(out[3, 3], expected)


def test_mask_colors_reproducible():
    c = mask_colors(5)
    assert c.shape == (5, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(c, mask_colors(5))
    assert len({tuple(x) for x in c}) == 5
