"""Result files: atomic result directories, fault injection (ENOSPC, a block before the
rename, a crash), retention by count / bytes / age, the low-disk guard."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import assert_only_complete

import edge.service.sink as sink_mod
from edge.service.config import OutputConfig
from edge.service.sink import PARTIAL_PREFIX, RESULT_NAME, ResultSink, result_name
from edge.service.telemetry import Metrics

T0 = 1_790_000_000.0
IMG = np.full((24, 32, 3), 90, np.uint8)


def _sink(tmp_path: Path, **kw) -> ResultSink:
    cfg = OutputConfig(dir=str(tmp_path / "out"), min_free_mb=0.0, **kw)
    s = ResultSink(cfg, Metrics())
    s.start()
    return s


def _visible(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize(
    ("kw", "overlay_name", "magic"),
    [
        pytest.param({}, "overlay.jpg", b"\xff\xd8\xff", id="default-jpeg"),
        pytest.param({"overlay_format": "jpeg"}, "overlay.jpg", b"\xff\xd8\xff", id="jpeg"),
        pytest.param({"overlay_format": "png"}, "overlay.png", b"\x89PNG", id="png"),
    ],
)
def test_write_layout_and_names(tmp_path, kw, overlay_name, magic):
    s = _sink(tmp_path, frame=True, **kw)
    r = s.write({"a": 1}, T0, 42, overlay=IMG, frame=IMG)
    assert r is not None and r.name == result_name(T0, 42) and RESULT_NAME.match(r.name)
    assert sorted(os.listdir(r.dir)) == ["frame.jpg", overlay_name, "result.json"]
    assert (r.dir / overlay_name).read_bytes().startswith(magic)
    decoded = cv2.imread(str(r.dir / overlay_name))
    assert decoded.shape == IMG.shape and np.abs(decoded.astype(int) - IMG).max() <= 2
    doc = json.loads((r.dir / "result.json").read_text())
    assert doc == {
        "a": 1,
        "files": {"json": "result.json", "overlay": overlay_name, "frame": "frame.jpg"},
    }
    assert_only_complete(s.dir)
    assert s.metrics.get("fastsam_results_written_total") == 1


def test_enospc_leaves_no_partial_files_and_the_next_write_works(tmp_path, monkeypatch):
    s = _sink(tmp_path)
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 2:  # the second file of the result: disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    assert s.write({"x": 1}, T0, 1, overlay=IMG) is None
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert os.listdir(s.dir) == []  # no result, no .partial dir, no temp file
    assert s.metrics.get("fastsam_errors_total", kind="write") == 1
    assert s.write({"x": 2}, T0 + 1, 2, overlay=IMG) is not None
    assert_only_complete(s.dir)
    assert len(_visible(s.dir)) == 1


def test_a_block_between_write_and_rename_shows_nothing_incomplete(tmp_path, monkeypatch):
    s = _sink(tmp_path)
    s.write({"first": True}, T0, 1, overlay=IMG)
    reached, release = threading.Event(), threading.Event()
    real = sink_mod._rename_into_place

    def blocked(tmp, final):
        reached.set()
        assert release.wait(30)
        real(tmp, final)

    monkeypatch.setattr(sink_mod, "_rename_into_place", blocked)
    t = threading.Thread(
        target=s.write, args=({"second": True}, T0 + 1, 2), kwargs={"overlay": IMG}
    )
    t.start()
    assert reached.wait(30)
    # a reader (a file watcher, rsync, a person) now sees only the first, complete result
    assert _visible(s.dir) == [result_name(T0, 1)]
    hidden = [p for p in s.dir.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
    assert len(hidden) == 1 and (hidden[0] / "result.json").is_file()
    release.set()
    t.join(30)
    assert _visible(s.dir) == [result_name(T0, 1), result_name(T0 + 1, 2)]
    assert_only_complete(s.dir)


def test_a_crash_before_the_rename_is_cleaned_at_start(tmp_path):
    out = tmp_path / "out"
    leftover = out / f"{PARTIAL_PREFIX}{result_name(T0, 5)}"
    leftover.mkdir(parents=True)
    (leftover / "result.json").write_text("{")
    (out / "my-notes.txt").write_text("not ours: never touched")
    s = _sink(tmp_path)
    assert not leftover.exists() and (out / "my-notes.txt").exists()
    assert s.count == 0


def test_rename_failure_is_logged_and_cleaned(tmp_path, monkeypatch):
    s = _sink(tmp_path)

    def fail(tmp, final):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sink_mod, "_rename_into_place", fail)
    assert s.write({}, T0, 1, overlay=IMG) is None
    assert os.listdir(s.dir) == []


def test_retention_by_count_bytes_and_age(tmp_path):
    s = _sink(tmp_path, max_results=3, max_mb=0.0, max_age_days=0.0)
    for i in range(5):
        s.write({"i": i}, T0 + i, i, overlay=IMG)
    assert _visible(s.dir) == [result_name(T0 + i, i) for i in (2, 3, 4)]
    assert s.metrics.get("fastsam_results_deleted_total") == 2

    one = s.total_bytes / 3
    s2 = _sink(tmp_path / "b", max_results=0, max_mb=2.5 * one / 2**20, max_age_days=0.0)
    for i in range(5):
        s2.write({"i": i}, T0 + i, i, overlay=IMG)
    assert s2.count == 2 and s2.total_bytes <= 2.5 * one

    s3 = _sink(tmp_path / "c", max_results=0, max_mb=0.0, max_age_days=1.0)
    s3.write({}, T0, 1)
    s3.write({}, T0 + 3600, 2)
    s3.write({}, T0 + 86400 + 10, 3)  # the first is now more than a day old
    assert _visible(s3.dir) == [result_name(T0 + 3600, 2), result_name(T0 + 86400 + 10, 3)]


def test_retention_index_survives_a_restart(tmp_path):
    s = _sink(tmp_path, max_results=2)
    for i in range(2):
        s.write({}, T0 + i, i)
    s_again = _sink(tmp_path, max_results=2)
    assert s_again.count == 2 and s_again.total_bytes == s.total_bytes
    s_again.write({}, T0 + 5, 5)
    assert _visible(s_again.dir) == [result_name(T0 + 1, 1), result_name(T0 + 5, 5)]


def test_low_disk_guard_skips_writes(tmp_path, monkeypatch):
    s = _sink(tmp_path)
    s.cfg = OutputConfig(dir=str(s.dir), min_free_mb=10.0)
    monkeypatch.setattr(s, "free_bytes", lambda: 5 * 2**20)
    assert s.write({}, T0, 1) is None
    assert s.metrics.get("fastsam_results_skipped_total", reason="disk_full") == 1
    monkeypatch.setattr(s, "free_bytes", lambda: 50 * 2**20)
    assert s.write({}, T0, 1) is not None


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_frame_formats(tmp_path, fmt):
    s = _sink(tmp_path, frame=True, frame_format=fmt, overlay=False)
    r = s.write({}, T0, 1, frame=IMG)
    assert (r.dir / f"frame.{fmt}").is_file()
    assert_only_complete(s.dir)


def test_saved_prompts_get_their_own_names_and_a_collision_is_no_disk_problem(tmp_path):
    from edge.service.sink import result_frame_id

    s = _sink(tmp_path)
    first = s.write({"k": 0}, T0, 42)
    prompts = [s.write({"k": i}, T0, 42, prompt=True) for i in (1, 2)]
    assert first is not None and all(p is not None for p in prompts)
    names = [first.name] + [p.name for p in prompts if p is not None]
    base = result_name(T0, 42)
    assert names == [base, f"{base}_p1", f"{base}_p2"] == _visible(s.dir)
    assert all(RESULT_NAME.match(n) and result_frame_id(n) == 42 for n in names)
    assert json.loads((s.dir / f"{base}_p2" / "result.json").read_text())["k"] == 2
    # the same frame's result written twice: refused, said, but the disk is fine
    assert s.write({"k": 9}, T0, 42) is None
    assert s.write_error is None and "exists" in (s.last_failure or "")
    assert s.write({"k": 3}, T0, 43) is not None and s.last_failure is None


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("20261125T130102.123Z_00000042", True),
        ("20261125T130102.123Z_00000042_p7", True),
        ("20261125T130102.123Z_00000042_p", False),
        ("20261125T130102.123Z_00000042_x1", False),
        ("20261125T130102.123Z_00000042_p1/..", False),
    ],
)
def test_result_names(name, ok):
    assert bool(RESULT_NAME.match(name)) == ok


def test_a_failed_write_says_why(tmp_path, monkeypatch):
    s = _sink(tmp_path)

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink_mod, "atomic_write_bytes", full)
    assert s.write({"k": 1}, T0, 7, prompt=True) is None
    assert "ENOSPC" in (s.last_failure or "") and s.write_error is not None
    assert _visible(s.dir) == []
