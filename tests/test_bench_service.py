"""``fastsam-edge bench --service-replay``: the service pipeline next to segment-only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.bench.service import (
    BIG_FRAME_HW,
    STAGES,
    replay_files,
    rle_scaling,
    service_markdown,
    write_scene_replay,
)
from edge.errors import InputError
from edge.service.telemetry import Metrics
from edge.types import MaskCrop, Masks
from tests.helpers import run_cli


def test_replay_files_sorted_images_only(tmp_path):
    write_scene_replay(tmp_path, 64, 48, 2)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in replay_files(tmp_path)] == ["frame0000.jpg", "frame0001.jpg"]


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        pytest.param(lambda p: p / "missing", "is not a folder", id="missing"),
        pytest.param(lambda p: p, "no images", id="empty"),
    ],
)
def test_replay_files_rejects(tmp_path, make, needle):
    with pytest.raises(InputError, match=needle):
        replay_files(make(tmp_path))


def test_rle_scaling_same_masks_small_and_big_frame():
    rng = np.random.default_rng(0)
    crops = tuple(
        MaskCrop(rng.random((20, 30)) < 0.7, int(x), int(y))
        for x, y in rng.integers(0, 30, size=(6, 2))
    )
    result = Masks(
        xyxy=np.zeros((6, 4), np.float32),
        confidence=np.ones(6, np.float32),
        crops=crops,
        image_hw=(60, 80),
    )
    out = rle_scaling(result, repeats=1)
    assert out["masks"] == 6 and out["mean_mask_px"] == pytest.approx(
        np.mean([c.area for c in crops])
    )
    assert [r["frame"] for r in out["rows"]] == [[80, 60], [BIG_FRAME_HW[1], BIG_FRAME_HW[0]]]
    for row in out["rows"]:
        assert row["crop_ms_per_mask"] > 0 and row["frame_sized_ms_per_mask"] > 0


def test_metrics_keep_samples():
    kept = Metrics(keep_samples=True)
    for v in (0.1, 0.3):
        kept.observe("fastsam_output_seconds", v)
    assert kept.samples("fastsam_output_seconds") == [0.1, 0.3]
    assert kept.mean_ms("fastsam_output_seconds") == pytest.approx(200.0)
    assert kept.samples("fastsam_read_seconds") == []
    with pytest.raises(RuntimeError, match="keep_samples"):
        Metrics().samples("fastsam_output_seconds")


def test_cli_service_replay_writes_report(tmp_path):
    replay = tmp_path / "replay"
    write_scene_replay(replay, 160, 120, 3)
    out = tmp_path / "out"
    proc = run_cli(
        "bench", "--service-replay", str(replay), "--masks", "5", "--precision", "fp32",
        "--threads", "1", "--rounds", "1", "--out", str(out), "--json", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "service.json").read_text())
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert report["bundle"]["name"] and report["rounds"] == 1 and report["threads"] == 1
    (row,) = report["rows"]
    assert row["precision"] == "fp32" and row["frame"] == [160, 120] and row["frames"] == 3
    assert row["masks"] > 0 and row["bytes_per_result"] > 0
    assert row["segment_only_fps"] > 0 and row["service_fps"] > 0
    assert row["service_over_segment_only"] == pytest.approx(
        row["service_fps"] / row["segment_only_fps"]
    )
    assert row["staged_fps"] > 0  # the staged pipeline, side by side
    assert row["staged_over_serial"] == pytest.approx(row["staged_fps"] / row["service_fps"])
    assert row["staged_over_segment_only"] == pytest.approx(
        row["staged_fps"] / row["segment_only_fps"]
    )
    assert set(row["stages_ms"]) == set(STAGES) == set(row["staged_stages_ms"])
    assert all(row["stages_ms"][s]["p90"] >= row["stages_ms"][s]["p50"] >= 0 for s in STAGES)
    assert "staged fps" in (out / "service.md").read_text()
    assert row["output_over_segment"] == pytest.approx(
        row["stages_ms"]["output"]["p50"] / row["stages_ms"]["segment"]["p50"]
    )
    assert len(report["rle_scaling"][0]["rows"]) == 2
    # results went to a temporary directory under --out, removed afterwards
    assert sorted(p.name for p in out.iterdir()) == ["service.json", "service.md"]
    table = (out / "service.md").read_text()
    assert table == service_markdown(report) and "| fp32 | 160x120 | 5 |" in table
    assert "service.md" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--rounds", "0"], "rounds: too small", id="rounds"),
        pytest.param(["--masks", "0"], "masks: expected positive", id="masks"),
        pytest.param(["--precision", "fp16"], "none of the precisions", id="precision"),
    ],
)
def test_cli_service_replay_bad_arguments(tmp_path, args, needle):
    write_scene_replay(tmp_path / "r", 64, 48, 2)
    proc = run_cli("bench", "--service-replay", str(tmp_path / "r"), *args, "--out",
                   str(tmp_path / "o"))  # fmt: skip
    assert proc.returncode != 0 and needle in proc.stderr
