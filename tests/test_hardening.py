"""Bad input at the command line never takes memory, a loop or a traceback (issue 11).

Each case runs the real ``fastsam-edge`` entry point; a clear error is exit code 2 with one
``fastsam-edge: error:`` line naming the flag/field and the value, and no traceback.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge.scenes import generate_scene

RSS_LIMIT_MB = 600

# runs the CLI in-process of a fresh interpreter and reports its own peak RSS
_RSS_SCRIPT = """
import resource, sys
from edge.cli import main
code = main(sys.argv[1:])
print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _segment_peak(image, bundle, tmp_path, *extra):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_SCRIPT,
            "segment",
            str(image),
            "--bundle",
            str(bundle),
            "--json",
            str(tmp_path / "out.json"),
            "--overlay",
            str(tmp_path / "ov.png"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("maxrss_kb")]
    assert line, proc.stderr
    return proc, int(line[0].split()[1]) / 1024


def _jpeg_claiming(w, h):
    image = generate_scene(1_000_001, width=160, height=120).image
    data = cv2.imencode(".jpg", image)[1].tobytes()
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", h, w) + data[at + 9 :]


def _png_claiming(w, h):
    data = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    return data[:16] + struct.pack(">II", w, h) + data[24:]


@pytest.mark.parametrize(
    ("name", "make", "size"),
    [
        ("bomb-30000.jpg", lambda: _jpeg_claiming(30000, 30000), "30000x30000"),
        ("bomb-50000.png", lambda: _png_claiming(50000, 50000), "50000x50000"),
        ("bomb-20000.png", lambda: _png_claiming(20000, 20000), "20000x20000"),
    ],
)
def test_segment_refuses_image_bombs_cheaply(tmp_path, demo_bundle, name, make, size):
    path = tmp_path / name
    path.write_bytes(make())
    proc, peak_mb = _segment_peak(path, demo_bundle, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"fastsam-edge: error: image: {str(path)!r} is {size}" in proc.stderr
    assert "above the limit of 50.0 megapixels" in proc.stderr
    assert peak_mb < 200, f"{name}: peak RSS {peak_mb:.0f} MB"
    assert not (tmp_path / "out.json").exists()


@pytest.fixture(scope="module")
def near_limit_images(tmp_path_factory):
    """Real 8000x6000 (48 MP, just under the limit) PNG and EXIF-rotated JPEG of a demo scene."""
    d = tmp_path_factory.mktemp("big")
    scene = generate_scene(1_000_002, width=640, height=480).image
    big = cv2.resize(scene, (8000, 6000), interpolation=cv2.INTER_NEAREST)
    png = d / "scene-48mp.png"
    cv2.imwrite(str(png), big)
    tiff = (
        b"MM\0*" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\0" * 4
    )
    app1 = b"Exif\0\0" + tiff
    data = cv2.imencode(".jpg", big)[1].tobytes()
    jpg = d / "scene-48mp-rot6.jpg"
    jpg.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    return {"png": png, "jpg-exif-rot6": jpg}


@pytest.mark.parametrize("kind", ["png", "jpg-exif-rot6"])
def test_segment_peak_rss_near_the_pixel_limit(tmp_path, demo_bundle, near_limit_images, kind):
    """The largest accepted frame, with an overlay, stays under 600 MB peak RSS."""
    proc, peak_mb = _segment_peak(near_limit_images[kind], demo_bundle, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert peak_mb < RSS_LIMIT_MB, f"{kind}: peak RSS {peak_mb:.0f} MB"
    assert (tmp_path / "out.json").is_file() and (tmp_path / "ov.png").is_file()
    print(f"{kind}: peak RSS {peak_mb:.0f} MB")


def test_segment_max_pixels_flag(tmp_path, demo_bundle):
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), generate_scene(1_000_003, width=320, height=240).image)
    proc, _ = _segment_peak(path, demo_bundle, tmp_path, "--max-pixels", "76799")
    assert proc.returncode == 2
    assert "is 320x240 (0.1 megapixels), above the limit" in proc.stderr
    proc, _ = _segment_peak(path, demo_bundle, tmp_path, "--max-pixels", "76800")
    assert proc.returncode == 0, proc.stderr


def test_segment_max_pixels_default_is_the_reader_default():
    from edge.cli import build_parser
    from edge.io import MAX_IMAGE_PIXELS

    args = build_parser().parse_args(["segment", "x.png", "--bundle", "b", "--json", "o.json"])
    assert args.max_pixels == MAX_IMAGE_PIXELS
