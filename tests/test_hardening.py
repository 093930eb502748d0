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

from edge.demo.scenes import generate_scene

RSS_LIMIT_MB = 600

# runs the CLI in a fresh interpreter and reports its own peak RSS: VmHWM belongs to the new
# address space (ru_maxrss would carry over the forking pytest process's peak through exec)
_RSS_SCRIPT = """
import sys
from edge.cli import main
code = main(sys.argv[1:])
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print("maxrss_kb", hwm, file=sys.stderr)
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


# --------------------------------------------------------------------------------------------
# command-line flags, prompt files, image paths and bundles: a clear error, never a traceback
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    cv2.imwrite(str(path), generate_scene(1_000_004, width=320, height=240).image)
    return path


def _run(capsys, *args):
    """``fastsam-edge ARGS`` in-process: (exit code, stderr). Any exception fails the test."""
    from edge.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    return code, capsys.readouterr().err


def _deep(depth):
    return "[" * depth + "]" * depth


def _prompt_file(tmp_path, text):
    path = tmp_path / "prompts.json"
    path.write_text(text)
    return str(path)


# (id, extra segment args built from tmp_path, expected text in the one error line)
FLAG_CASES = [
    ("threads-0", lambda t: ["--threads", "0"], "argument --threads: expected a positive"),
    ("threads-neg", lambda t: ["--threads", "-1"], "argument --threads: expected a positive"),
    ("threads-text", lambda t: ["--threads", "two"], "argument --threads: expected a positive"),
    ("max-pixels-0", lambda t: ["--max-pixels", "0"], "argument --max-pixels: expected"),
    ("prompts-deep-json", lambda t: ["--prompts", _prompt_file(t, _deep(100_000))], "nested too"),
    (
        "prompts-deep-data",
        lambda t: ["--prompts", _prompt_file(t, '{"type": "point", "data": ' + _deep(500) + "}")],
        "point: coordinates must be numbers",
    ),
    (
        "prompts-deep-type",
        lambda t: ["--prompts", _prompt_file(t, '[{"type": ' + _deep(500) + ', "data": 1}]')],
        "prompts[0].type: expected one of",
    ),
    (
        "box-strings",
        lambda t: [
            "--prompts",
            _prompt_file(t, '{"type": "box", "data": ["1", "2", "30", "40"]}'),
        ],
        "box: coordinates must be numbers, got '1'",
    ),
    (
        "point-bools",
        lambda t: ["--prompts", _prompt_file(t, '{"type": "point", "data": [true, false]}')],
        "point: coordinates must be numbers, got True",
    ),
    (
        "label-true",
        lambda t: [
            "--prompts",
            _prompt_file(t, '{"type": "point", "data": [5, 5], "label": true}'),
        ],
        "label[0]: expected 0 or 1, got True",
    ),
    (
        "label-mixed-bool",
        lambda t: [
            "--prompts",
            _prompt_file(t, '{"type": "point", "data": [[5, 5], [6, 6]], "label": [1, true]}'),
        ],
        "label[1]: expected 0 or 1, got True",
    ),
    ("prompts-dir", lambda t: ["--prompts", str(t)], "is a directory"),
    ("prompts-fifo", lambda t: ["--prompts", _fifo(t)], "is a FIFO"),
    ("prompts-loop", lambda t: ["--prompts", _loop(t)], "is a symlink loop"),
]


def _fifo(tmp_path):
    import os

    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


def _loop(tmp_path):
    path = tmp_path / "loop"
    path.symlink_to(path)
    return str(path)


@pytest.mark.parametrize(
    ("make", "needle"), [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES]
)
def test_segment_flag_and_prompt_errors(tmp_path, capsys, demo_bundle, scene_file, make, needle):
    out = tmp_path / "out.json"
    code, err = _run(
        capsys,
        "segment",
        str(scene_file),
        "--bundle",
        str(demo_bundle),
        "--json",
        str(out),
        *make(tmp_path),
    )
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err
    assert not out.exists()


IMAGE_PATH_CASES = [
    ("directory", lambda t: str(t), "is a directory"),
    ("fifo", _fifo, "is a FIFO"),
    ("symlink-loop", _loop, "is a symlink loop"),
    ("missing", lambda t: str(t / "nope.png"), "does not exist"),
]


@pytest.mark.parametrize(
    ("make", "needle"), [c[1:] for c in IMAGE_PATH_CASES], ids=[c[0] for c in IMAGE_PATH_CASES]
)
def test_segment_image_path_kinds(tmp_path, capsys, demo_bundle, make, needle):
    code, err = _run(
        capsys,
        "segment",
        make(tmp_path),
        "--bundle",
        str(demo_bundle),
        "--json",
        str(tmp_path / "o.json"),
    )
    assert code == 2 and needle in err, err


def _bundle_with(tmp_path, demo_bundle, edit=None, text=None):
    """A bundle directory: the demo detector (symlinked) and an edited bundle.json."""
    import json

    d = tmp_path / "bundle"
    d.mkdir()
    (d / "fastsam.fp32.onnx").symlink_to(demo_bundle / "fastsam.fp32.onnx")
    if text is None:
        doc = json.loads((demo_bundle / "bundle.json").read_text())
        doc["precisions"], doc["default_precision"] = ["fp32"], "fp32"
        edit(doc)
        text = json.dumps(doc)
    (d / "bundle.json").write_text(text)
    return d


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


BUNDLE_CASES = [
    ("dynamic-on-static", _set("input", "dynamic", True), "input.dynamic: true, but the model"),
    ("dynamic-string", _set("input", "dynamic", "false"), "input.dynamic: expected true or false"),
    ("stride-0", _set("input", "stride", 0), "input.stride: expected an integer >= 1"),
    ("imgsz-float", _set("input", "imgsz", [320.0, 320]), "input.imgsz: expected"),
    ("max_det-float", _set("thresholds", "max_det", 2.7), "thresholds.max_det: expected an"),
    (
        "bytes-string",
        _set("files", "fastsam.fp32.onnx", "bytes", "13161994"),
        "files.fastsam.fp32.onnx.bytes: expected an integer",
    ),
    ("imgsz-mismatch", _set("input", "imgsz", [640, 640]), "does not match bundle.json"),
]


@pytest.mark.parametrize(
    ("edit", "needle"), [c[1:] for c in BUNDLE_CASES], ids=[c[0] for c in BUNDLE_CASES]
)
def test_segment_bundle_errors_at_load(tmp_path, capsys, demo_bundle, scene_file, edit, needle):
    bundle = _bundle_with(tmp_path, demo_bundle, edit)
    code, err = _run(
        capsys,
        "segment",
        str(scene_file),
        "--bundle",
        str(bundle),
        "--json",
        str(tmp_path / "o.json"),
    )
    assert code == 2, err
    assert needle in err


def test_segment_deeply_nested_bundle_json(tmp_path, capsys, demo_bundle, scene_file):
    bundle = _bundle_with(tmp_path, demo_bundle, text='{"a": ' + _deep(100_000) + "}")
    code, err = _run(
        capsys,
        "segment",
        str(scene_file),
        "--bundle",
        str(bundle),
        "--json",
        str(tmp_path / "o.json"),
    )
    assert code == 2 and "nested too deeply" in err, err


def test_segmenter_load_threads_is_an_input_error(demo_bundle):
    from edge import InputError, Segmenter

    for bad in (0, -1, True, 2.0, "2"):
        with pytest.raises(InputError, match="threads: expected a positive integer"):
            Segmenter.load(demo_bundle, threads=bad)


BENCH_CASES = [
    (["--threads", "0"], "threads: expected positive counts, got '0'"),
    (["--threads", "-1"], "threads: expected"),
    (["--threads", "3-1"], "threads: expected 'all', N, 'A-B'"),
    (["--sizes", "12"], "sizes: expected WxH"),
    (["--modes", "nope"], "modes: expected some of"),
    (["--runs", "0"], "runs: too small: 0"),
    (["--masks", "x,y"], "masks: expected positive counts, got 'x,y'"),
    (["--masks", "0"], "masks: expected positive counts"),
]


@pytest.mark.parametrize(
    ("args", "needle"), BENCH_CASES, ids=[" ".join(c[0]) for c in BENCH_CASES]
)
def test_bench_flag_errors(tmp_path, capsys, args, needle):
    code, err = _run(capsys, "bench", "--out", str(tmp_path / "b"), *args)
    assert code == 2, err
    assert needle in err and "Traceback" not in err
