"""edge.bench.run / report / cli: recommendation, tables, plots, arguments and a real run."""

from __future__ import annotations

import json
from contextlib import nullcontext as DoesNotRaise
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import run_cli

from edge.bench import draw_plot, draw_sustained, parse_threads, recommend, to_markdown
from edge.bench.cli import bench_images
from edge.bench.report import COMPACT_WIDTH, nice_log_ticks, nice_ticks, report_warnings
from edge.bench.worker import percentiles
from edge.errors import InputError
from edge.tokenizer import missing_text_deps


def _row(bundle: str, wh: tuple[int, int], precision: str, threads: int, ms: float,
         side: str = "edge", mode: str = "everything", target: int = 100) -> dict:  # fmt: skip
    stages = {
        "preprocess": percentiles([1.0]),
        "infer": percentiles([ms - 11.0]),
        "postprocess": percentiles([10.0]),
    }
    return {
        "bundle": Path(bundle).name, "bundle_dir": bundle, "input": list(wh),
        "image": "scene", "image_wh": [640, 480], "target_masks": target, "conf": 0.5,
        "side": side, "precision": precision, "threads": threads, "mode": mode,
        "masks": 100, "selected": None, "runs": 5, "stages_ms": stages,
        "end_to_end_ms": percentiles([ms, ms * 1.1, ms * 0.95]), "fps": 1e3 / ms,
        "peak_rss_mb": 150.0, "pre_post_ms": 11.0, "pre_post_over_model": 11.0 / (ms - 11.0),
        "postprocess_ms_per_mask": 0.1,
    }  # fmt: skip


def _report(rows: list[dict]) -> dict:
    return {
        "machine": {
            "cpu": "test cpu",
            "machine": "x86_64",
            "cores": 4,
            "cpu_flags": ["avx2"],
            "onnxruntime": "1.x",
            "providers": ["CPUExecutionProvider"],
        },  # fmt: skip
        "settings": {"threads": [1, 2], "runs": 5},
        "rows": rows,
        "peak": {"fp32": {"2": {"gops": 100.0}}},
        "ops": {"b@640x640": {"gop": 40.0, "method": "test"}},
        "agreement": [],
        "recommendation": recommend(rows, 1.0),
        "board": {},
    }


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            [
                _row("a", (640, 640), "fp32", 1, 400),
                _row("a", (640, 640), "int8", 1, 150),
                _row("a", (640, 640), "fp32", 2, 220),
                _row("a", (640, 640), "int8", 2, 100),
            ],
            ("a", "int8", 2),
            id="int8-more-threads-wins",
        ),
        pytest.param(
            [_row("a", (640, 640), "int8", 1, 103), _row("a", (640, 640), "int8", 4, 100)],
            ("a", "int8", 1),
            id="fewer-threads-within-5pct",
        ),
        pytest.param(
            [_row("a", (640, 640), "int8", 2, 300), _row("a", (640, 640), "fp32", 2, 250)],
            ("a", "fp32", 2),
            id="fp32-beats-int8-eg-cortex-a72",
        ),
        pytest.param(
            [_row("big", (1024, 1024), "int8", 2, 900), _row("small", (640, 640), "int8", 2, 300)],
            ("big", "int8", 2),
            id="largest-input-reaching-1fps",
        ),
        pytest.param(
            [
                _row("big", (1024, 1024), "int8", 2, 1500),
                _row("small", (640, 640), "int8", 2, 600),
            ],
            ("small", "int8", 2),
            id="largest-reaching-target-not-the-biggest",
        ),
        pytest.param(
            [
                _row("big", (1024, 1024), "int8", 2, 3000),
                _row("small", (640, 640), "int8", 2, 2000),
            ],
            ("small", "int8", 2),
            id="none-reach-target-fastest",
        ),
        pytest.param(
            [
                _row("a", (640, 640), "fp32", 2, 100, side="ultralytics-pt"),
                _row("a", (640, 640), "int8", 2, 500, mode="point"),
            ],  # fmt: skip
            None,
            id="no-edge-everything-rows",
        ),
    ],
)
def test_recommend(rows, expected):
    rec = recommend(rows, target_fps=1.0)
    if expected is None:
        assert rec is None
        return
    assert (rec["bundle"], rec["precision"], rec["threads"]) == expected
    assert rec["serve"] == {
        "model.bundle": expected[0], "model.precision": expected[1], "model.threads": expected[2]
    }  # fmt: skip
    assert rec["fps"] == pytest.approx(1e3 / rec["end_to_end_ms"])


def test_recommend_uses_largest_mask_target():
    rows = [_row("a", (640, 640), "fp32", 2, 100, target=20),
            _row("a", (640, 640), "int8", 2, 300, target=20),
            _row("a", (640, 640), "fp32", 2, 400, target=300),
            _row("a", (640, 640), "int8", 2, 200, target=300)]  # fmt: skip
    rec = recommend(rows, 1.0)
    assert rec["precision"] == "int8" and rec["target_masks"] == 300


def test_markdown_has_percentiles_speedups_and_recommendation():
    rows = [_row("b", (640, 640), "fp32", 2, 200), _row("b", (640, 640), "int8", 2, 80),
            _row("b", (640, 640), "fp32", 2, 800, side="ultralytics-pt")]  # fmt: skip
    rows[1]["model_gops"], rows[1]["model_pct_of_peak"] = 500.0, 62.5
    table = to_markdown(_report(rows), full=True)
    assert "| edge int8 | 2 | everything |" in table
    assert "| 10.0x |" in table  # 800 / 80
    assert "| 1.0x |" in table
    assert "500 (62 %)" in table
    assert "e2e p99" in table
    assert "**Recommendation:** `b`" in table and "int8, 2 threads" in table
    assert "- fp32: 2 threads 100 GOP/s" in table


def test_compact_table_fits_a_terminal_and_keeps_the_key_columns():
    long = "fastsam-s-640x480-with-a-very-long-bundle-name"
    rows = [_row(long, (640, 480), "fp32", 2, 200), _row(long, (640, 480), "int8", 2, 80),
            _row(long, (640, 480), "fp32", 2, 800, side="ultralytics-pt"),
            _row(long, (640, 480), "int8", 2, 120, mode="point")]  # fmt: skip
    for r in rows:
        r["image"] = "a-rather-long-image-name-from-a-camera-folder"
    rows[3]["selected"] = 1
    report = _report(rows)
    md = to_markdown(report)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert max(map(len, table)) <= COMPACT_WIDTH, max(table, key=len)
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["bundle", "image", "prec", "thr", "mode", "masks", "p50 ms", "p90 ms",
                      "FPS", "RSS MiB", "x ref"]  # fmt: skip
    cells = [c.strip() for c in table[3].strip("|").split("|")]  # the int8 everything row
    assert cells[2:6] == ["int8", "2", "every", "100"]
    assert cells[6] == "80.0" and cells[8] == "12.50" and cells[9] == "150"
    assert cells[10] == "10.0x"  # 800 / 80
    assert "| ul-pt |" in md and "100>1" in md  # reference side; point mode masks > selected
    assert "e2e p99" not in md and "e2e p99" in to_markdown(report, full=True)
    assert "**Recommendation:**" in md


@pytest.mark.parametrize(
    ("runs", "loads", "needles"),
    [
        (20, [0.1, 0.2], []),
        (5, [0.1, 0.2], ["p99 is computed from 5 runs"]),
        (30, [0.1, 4.4], ["load average above 0.5 per core (max 4.40 on 4 cores)"]),
        (3, [4.4, 4.4], ["2 of 2 runs started", "p99 is computed from 3 runs"]),
    ],
)
def test_report_warnings(runs, loads, needles):
    rows = [_row("b", (640, 640), "fp32", 2, 200), _row("b", (640, 640), "int8", 2, 80)]
    for r, load in zip(rows, loads, strict=True):
        r["load_before"] = load
    report = _report(rows)
    report["settings"]["runs"] = runs
    warnings = report_warnings(report)
    assert len(warnings) == len(needles)
    for w, needle in zip(warnings, needles, strict=True):
        assert needle in w
    md = to_markdown(report)
    assert md.count("**Warning:**") == len(needles)


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0, 98 * 1.05, [0, 50, 100, 150]),
        (0, 100, [0, 25, 50, 75, 100]),
        (0, 3.7, [0, 1, 2, 3, 4]),
        (0, 1234, [0, 500, 1000, 1500]),
        (12, 13.1, [12, 12.5, 13, 13.5]),
        (0, 0.042, [0, 0.02, 0.04, 0.06]),
    ],
)
def test_nice_ticks(lo, hi, expected):
    ticks = nice_ticks(lo, hi)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= lo and ticks[-1] >= hi


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [(40, 400, [50, 100, 200]), (40, 5000, [100, 1000]), (1, 9, [1, 2, 5])],
)
def test_nice_log_ticks(lo, hi, expected):
    assert nice_log_ticks(lo, hi) == pytest.approx(expected)


def test_markdown_marks_emulated_runs():
    report = _report([_row("b", (640, 640), "fp32", 2, 200)])
    report["machine"]["emulated"] = True
    assert "emulated: timings are not representative" in to_markdown(report)


@pytest.mark.parametrize("threads", [[1, 2, 4], [2]])
def test_plot_draws_series(threads):
    rows = [_row("b", (640, 640), p, t, 100 * (1 + (p == "fp32")) / t)
            for t in threads for p in ("fp32", "int8")]  # fmt: skip
    img = draw_plot(_report(rows))
    assert img.dtype == np.uint8 and img.shape == (560, 1000, 3)
    # both series' colours are drawn
    assert (np.abs(img.astype(int) - (180, 119, 31)).sum(axis=2) == 0).any()
    assert (np.abs(img.astype(int) - (14, 127, 255)).sum(axis=2) == 0).any()


def test_sustained_plot():
    samples = [
        {"t_s": 0.0, "temperature_c": {"cpu": 50.0}, "cpu_mhz": {"cur": [1500.0]}},
        {"t_s": 9.0, "temperature_c": {"cpu": 60.0}, "cpu_mhz": {"cur": [1200.0]}},
    ]
    sus = {"series_ms": [10.0, 12.0, 11.0], "duration_s": 10.0, "samples": samples}
    img = draw_sustained(sus)
    assert (np.abs(img.astype(int) - (40, 40, 220)).sum(axis=2) == 0).any()  # temperature line


@pytest.mark.parametrize(
    ("spec", "cores", "expected", "expectation"),
    [
        ("all", 4, [1, 2, 3, 4], DoesNotRaise()),
        ("1-3", 8, [1, 2, 3], DoesNotRaise()),
        ("4,1,2,2", 8, [1, 2, 4], DoesNotRaise()),
        ("2", 8, [2], DoesNotRaise()),
        ("0", 8, None, pytest.raises(ValueError, match="positive")),
        ("3-1", 8, None, pytest.raises(ValueError, match="threads")),
        ("two", 8, None, pytest.raises(ValueError, match="'two'")),
    ],
)
def test_parse_threads(spec, cores, expected, expectation):
    with expectation:
        assert parse_threads(spec, cores) == expected


def test_bench_images(tmp_path):
    scenes = bench_images("320x240,64x48", None)
    assert [im.shape for im in scenes.values()] == [(240, 320, 3), (48, 64, 3)]
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((10, 12, 3), np.uint8))
    assert bench_images("", str(tmp_path))["a"].shape == (10, 12, 3)
    (tmp_path / "b.png").write_bytes(b"not an image")
    with pytest.raises(InputError):
        bench_images("", str(tmp_path))
    with pytest.raises(ValueError, match="WxH"):
        bench_images("640", None)


def test_bench_cli_on_demo_bundle(tmp_path: Path) -> None:
    """A real sweep: 2 thread counts x 2 precisions, the prompt modes, a short sustained run."""
    proc = run_cli(
        "bench",
        "--sizes",
        "320x240",
        "--masks",
        "5",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1,2",
        "--sustained",
        "2",
        "--out",
        str(tmp_path),
        "--json",
        str(tmp_path / "copy.json"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    configs = {(r["precision"], r["threads"], r["mode"]) for r in report["rows"]}
    # text mode needs the text extra (ftfy, regex): present in the export env, not in the
    # runtime envs, where the bench skips it with a note instead of failing
    text = not missing_text_deps()
    modes = ("point", "box", "text") if text else ("point", "box")
    expected = {(p, t, "everything") for p in ("fp32", "int8") for t in (1, 2)}
    assert configs == expected | {(p, 2, m) for p in ("fp32", "int8") for m in modes}
    assert any("text mode skipped" in n for n in report["notes"]) is not text
    # the demo bundle's CLIP is a ViT: its text mode goes through the score prefilter
    assert [b["text_prefilter"] for b in report["bundles"]] == ["score"]

    for row in report["rows"]:
        assert row["masks"] == 5 and row["peak_rss_mb"] > 10
        e2e = row["end_to_end_ms"]
        assert 0 < e2e["p50"] <= e2e["p90"] <= e2e["p99"] <= e2e["max"]
        assert row["stages_ms"]["infer"]["p50"] > 0
        assert row["model_gops"] > 0 and row["model_pct_of_peak"] > 0
        if row["mode"] == "everything":
            assert "prompt" not in row["stages_ms"] and row["selected"] is None
        else:
            assert row["stages_ms"]["prompt"]["p50"] > 0 and row["selected"] >= 1
    assert set(report["peak"]) == {"fp32", "int8"} and set(report["peak"]["int8"]) == {"1", "2"}
    (ops,) = report["ops"].values()
    assert 2.0 < ops["gop"] < 3.5  # YOLOv8n-seg nc=1 at 320: ultralytics reports 2.9 GFLOPs
    rec = report["recommendation"]
    assert rec["precision"] in ("fp32", "int8") and rec["threads"] in (1, 2)
    sus = report["sustained"]
    assert sus["duration_s"] >= 2 and sus["runs"] == len(sus["series_ms"]) >= 1
    assert sus["samples"] and {"temperature_c", "cpu_mhz", "throttled"} <= set(sus["samples"][0])
    assert {"before", "after"} == set(report["board"])
    md = (tmp_path / "bench.md").read_text()
    assert "**Recommendation:**" in md and "Sustained" in md
    assert max(len(x) for x in md.splitlines() if x.startswith("|")) <= 100
    assert "e2e p99" in (tmp_path / "bench-full.md").read_text()
    assert "p99 is computed from 2 runs" in md  # --runs 2
    assert all("load_before" in r for r in report["rows"]) and report["warnings"]
    assert json.loads((tmp_path / "copy.json").read_text()) == report
    for name in ("bench.png", "sustained.png"):
        assert cv2.imread(str(tmp_path / name)) is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modes", "everything,dance"], "modes"),
        (["--threads", "0"], "threads"),
        (["--runs", "0"], "runs"),
    ],
)
def test_bench_cli_rejects_bad_arguments(tmp_path, args, message):
    proc = run_cli("bench", *args, "--out", str(tmp_path), timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "bench.json").exists()


class _Manifest:
    def __init__(self, precisions, clip=True):
        self.precisions = precisions
        self.has_text = clip


@pytest.mark.parametrize(
    ("precisions", "modes", "reference", "expected"),
    [
        pytest.param(
            ("fp32", "int8"), ["everything"], False,
            [(20, "edge", "fp32", 1, "everything"), (20, "edge", "int8", 1, "everything"),
             (20, "edge", "fp32", 2, "everything"), (20, "edge", "int8", 2, "everything")],
            id="threads-then-precisions",
        ),
        pytest.param(
            ("int8",), ["everything", "box"], True,
            [(20, "edge", "int8", 1, "everything"), (20, "edge", "int8", 2, "everything"),
             (20, "edge", "int8", 2, "box"), (20, "ultralytics-pt", "fp32", 2, "everything"),
             (20, "ultralytics-onnx", "fp32", 2, "everything")],
            id="prompt-modes-at-most-threads-then-reference",
        ),
        pytest.param(("fp32",), ["point"], False, [(20, "edge", "fp32", 2, "point")],
                     id="no-everything"),
    ],
)  # fmt: skip
def test_plan_jobs_order(precisions, modes, reference, expected):
    from edge.bench.run import BenchPlan, plan_jobs

    plan = BenchPlan(bundles=["b"], images={}, mask_targets=[20], threads=[1, 2], modes=modes)
    jobs = plan_jobs(plan, _Manifest(precisions), reference)
    assert [(j.target, j.side, j.precision, j.threads, j.mode) for j in jobs] == expected


def test_markdown_names_the_int8_class():
    from edge.cpu import classify

    report = _report([_row("b", (640, 640), "fp32", 2, 200)])
    assert "int8 on this CPU" not in to_markdown(report)  # older reports have no class
    report["machine"]["int8_class"] = classify("aarch64", {"asimd"}, None).to_dict()
    assert "int8 on this CPU: arm-neon: no dot-product instructions" in to_markdown(report)
