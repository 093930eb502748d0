"""``fastsam-edge`` as a user runs it: sources, outputs, formats, flags, exit codes, pipes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import run_cli

from edge.cli import main
from edge.cliargs import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_CHECK_FAILED,
    EXIT_EMPTY,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_SKIPPED,
)
from edge.demo.scenes import EVAL_SEED_START, generate_scene

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three demo scenes (different sizes) and a non-image file, via the scenes command."""
    d = tmp_path_factory.mktemp("scenes") / "demo-scenes"
    proc = run_cli("scenes", str(d), "--count", "3", "--size", "320x240")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 3 scenes" in proc.stdout
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7-frame MJPG video of demo scenes."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    assert writer.isOpened()
    for k in range(7):
        writer.write(generate_scene(EVAL_SEED_START + 40 + k, 320, 240).image)
    writer.release()
    return path


def test_folder_with_progress_bar_and_one_result_per_frame(
    scenes_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    proc = run_cli("segment", str(scenes_dir), "--out", str(out), "--overlay", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"3/3 \[", proc.stderr), proc.stderr  # tqdm's bar
    names = sorted(p.name for p in out.iterdir())
    stems = [p.stem for p in sorted(scenes_dir.glob("*.png"))]
    assert names == sorted([f"{s}.json" for s in stems] + [f"{s}.png" for s in stems])
    for s in stems:
        doc = json.loads((out / f"{s}.json").read_text())
        assert doc["image"]["source"].endswith(f"{s}.png") and doc["num_masks"] > 0
        assert cv2.imread(str(out / f"{s}.png")).shape == (240, 320, 3)
    assert "3 frames" in proc.stdout and "results" in proc.stdout


def test_glob_summary_lines_and_json_to_stdout(scenes_dir: Path) -> None:
    pattern = str(scenes_dir / "scene_*.png")
    proc = run_cli("segment", pattern, "--threads", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("scene_")]
    assert len(lines) == 3 and all(re.search(r": \d+ masks \| preprocess", x) for x in lines)

    proc = run_cli("segment", pattern, "--json", "-", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)  # stdout holds only the JSON
    assert isinstance(docs, list) and len(docs) == 3
    assert not Path("-").exists()


def test_json_file_single_image_is_one_document(scenes_dir: Path, tmp_path: Path) -> None:
    img = sorted(scenes_dir.glob("*.png"))[0]
    out = tmp_path / "r.json"
    proc = run_cli("segment", str(img), "--json", str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 1 and doc["num_masks"] == len(doc["masks"]) > 0
    assert "|" not in proc.stderr  # one frame: no progress bar


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--json", "{missing}/r.json"),
        ("--out", "{missing}/results"),
        ("--overlay", "{missing}/o.png"),
    ],
)
def test_missing_parent_directories_are_not_created(
    scenes_dir: Path, tmp_path: Path, flag: str, value: str
) -> None:
    img = sorted(scenes_dir.glob("*.png"))[0]
    missing = tmp_path / "nonexist" / "d"
    proc = run_cli("segment", str(img), flag, value.format(missing=missing))
    assert proc.returncode == EXIT_BAD_INPUT
    assert f"{flag}: directory" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "nonexist").exists()


def test_video_with_stride_and_saved_video(video: Path, tmp_path: Path) -> None:
    out = tmp_path / "v"
    proc = run_cli(
        "segment", str(video), "--vid-stride", "3", "--out", str(out), "--save-video",
        "--threads", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    jsons = sorted(p.name for p in out.glob("*.json"))
    assert jsons == ["clip_000000.json", "clip_000003.json", "clip_000006.json"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # temp file renamed
    assert json.loads((out / "clip_000003.json").read_text())["frame_id"] == 3
    cap = cv2.VideoCapture(str(out / "clip.overlay.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    ok, frame = cap.read()
    assert ok and frame.shape == (240, 320, 3)
    cap.release()


def test_same_prompts_on_every_frame_and_empty_point_notes(scenes_dir: Path) -> None:
    # (2, 2) is background in every demo scene here: each frame says so, exit 0 ...
    args = ["segment", str(scenes_dir), "--point", "2,2", "--threads", "1", "--no-progress"]
    proc = run_cli(*args)
    assert proc.returncode == EXIT_OK, proc.stderr
    notes = re.findall(r"point \(2, 2\): selected nothing: the point lies outside every mask",
                       proc.stderr)  # fmt: skip
    assert len(notes) == 3, proc.stderr
    assert proc.stdout.count(": 0 masks") == 3
    # ... and --fail-empty turns it into exit 3
    proc = run_cli(*args, "--fail-empty")
    assert proc.returncode == EXIT_EMPTY and "--fail-empty" in proc.stderr


def test_overlay_labels_and_prompt_marks(scenes_dir: Path, tmp_path: Path) -> None:
    img = sorted(scenes_dir.glob("*.png"))[0]
    plain, labelled, marked = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    base = ["segment", str(img), "--threads", "1"]
    assert main([*base, "--overlay", str(plain), "--json", str(tmp_path / "a.json")]) == 0
    assert main([*base, "--overlay", str(labelled), "--labels"]) == 0
    assert main([*base, "--overlay", str(marked), "--point", "2,2", "--box", "5,5,60,50"]) == 0
    a, b, c = (cv2.imread(str(p)) for p in (plain, labelled, marked))
    doc = json.loads((tmp_path / "a.json").read_text())
    # labels are drawn at each mask's box corner
    x1, y1 = (int(v) for v in doc["masks"][0]["bbox_xyxy"][:2])
    assert (a[y1 : y1 + 16, x1 : x1 + 40] != b[y1 : y1 + 16, x1 : x1 + 40]).any()
    # the point ring around (2, 2) and the box outline are drawn although nothing was selected
    assert (c[0:14, 0:14] != cv2.imread(str(img))[0:14, 0:14]).any()
    assert (c[5, 20:40] == (255, 200, 0)).all()


def test_coco_format_for_a_folder(scenes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco.json"
    proc = run_cli("segment", str(scenes_dir), "--format", "coco", "--json", str(out),
                   "--threads", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    images = json.loads((tmp_path / "coco.images.json").read_text())
    ids = [im["id"] for im in images["images"]]
    assert ids == [1, 2, 3]
    assert [im["file_name"] for im in images["images"]] == sorted(
        p.name for p in scenes_dir.glob("*.png")
    )
    assert {r["image_id"] for r in results} == set(ids)
    r = results[0]
    assert set(r) == {"image_id", "category_id", "bbox", "score", "segmentation", "area"}
    assert r["category_id"] == 1 and len(r["bbox"]) == 4 and r["bbox"][2] > 0
    assert r["segmentation"]["size"] == [240, 320]


def test_global_options_before_or_after_the_subcommand(demo_bundle: Path) -> None:
    for args in (
        ["--debug", "info", "--bundle", str(demo_bundle)],
        ["info", "--bundle", str(demo_bundle), "--debug"],
        ["info", "--log-level", "info", "--bundle", str(demo_bundle)],
    ):
        assert main(args) == 0
    for args in (["--version"], ["info", "--version"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and re.fullmatch(r"fastsam-edge \d+\.\d+\.\d+\s*", proc.stdout)


def test_info_json_file_and_stdout(demo_bundle: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "info.json"
    assert main(["info", "--bundle", str(demo_bundle), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["file_check"]
    assert "name:" in capsys.readouterr().out  # text goes on to stdout
    assert main(["info", "--bundle", str(demo_bundle), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["name"]


def test_threads_is_one_number_outside_bench(scenes_dir: Path, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(scenes_dir), "--threads", "1,2"])
    assert exc.value.code == 2
    assert "thread sweeps are for bench" in capsys.readouterr().err


def test_deprecated_bench_precisions_warns(tmp_path: Path) -> None:
    proc = run_cli("bench", "--precisions", "fp32", "--runs", "0", "--out", str(tmp_path))
    assert "--precisions is deprecated" in proc.stderr and "use --precision" in proc.stderr
    assert "runs" in proc.stderr  # then the normal checks run


def test_broken_pipe_ends_quietly(scenes_dir: Path) -> None:
    cmd = [sys.executable, "-m", "edge.cli", "segment", str(scenes_dir), "--json", "-",
           "--no-progress", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the output comes, like `| head -c 0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert "Traceback" not in err and "Broken pipe" not in err, err


def test_missing_source_and_empty_folder(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["segment", str(tmp_path / "nope.png")]) == EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("x")
    assert main(["segment", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "is a directory with no image or video file" in capsys.readouterr().err


def test_exit_code_table_in_readme() -> None:
    text = README.read_text()
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|$", text, flags=re.M))
    expected = {
        EXIT_OK: "ok",
        EXIT_CHECK_FAILED: "check",
        EXIT_BAD_INPUT: "bad input",
        EXIT_EMPTY: "--fail-empty",
        EXIT_OUTPUT: "write",
        EXIT_SKIPPED: "skipped",
        EXIT_INTERRUPTED: "interrupted",
        EXIT_BROKEN_PIPE: "pipe",
    }
    for code, word in expected.items():
        assert word in table.get(str(code), ""), (code, table)


def test_unwritable_output_is_exit_4(scenes_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    img = sorted(scenes_dir.glob("*.png"))[0]
    taken = tmp_path / "r.json"
    taken.mkdir()  # a folder where the file should go: the write fails (also as root)
    assert main(["segment", str(img), "--json", str(taken)]) == EXIT_OUTPUT
    assert "error" in capsys.readouterr().err


def test_scenes_ground_truth_matches_the_images(scenes_dir: Path) -> None:
    gt = json.loads((scenes_dir / "annotations.json").read_text())
    assert [im["file_name"] for im in gt["images"]] == sorted(
        p.name for p in scenes_dir.glob("*.png")
    )
    assert gt["annotations"] and all(a["iscrowd"] == 0 for a in gt["annotations"])
    img = cv2.imread(str(scenes_dir / gt["images"][0]["file_name"]))
    assert img.shape[:2] == (gt["images"][0]["height"], gt["images"][0]["width"])
    assert np.isfinite([a["area"] for a in gt["annotations"]]).all()


def test_doctor_json_file_and_stdout(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "doctor.json"
    code = main(["doctor", "--user", "nobody-here", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert code == int(doc["failed"] > 0) and doc["checks"]
    assert "doctor:" in capsys.readouterr().out  # the text report still goes to stdout
    assert main(["doctor", "--user", "nobody-here", "--json"]) == code
    assert json.loads(capsys.readouterr().out)["checks"]
    missing = tmp_path / "no" / "d.json"
    assert main(["doctor", "--json", str(missing)]) == EXIT_BAD_INPUT
    assert not missing.parent.exists()


def test_serve_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("serve", "--demo", "--max-frames", "2", "--out", str(out), "--json", "-",
                   "--log-level", "error")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 2 and summary["written"] >= 1 and summary["reason"]


def test_coco_per_frame_files_under_out(scenes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco"
    proc = run_cli("segment", str(scenes_dir / "*.png"), "--format", "coco", "--out", str(out),
                   "--threads", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    images = json.loads((out / "images.json").read_text())
    assert [im["id"] for im in images["images"]] == [1, 2, 3]
    assert images["categories"][0]["id"] == 1
    for im in images["images"]:
        anns = json.loads((out / f"{Path(im['file_name']).stem}.json").read_text())
        assert anns and {a["image_id"] for a in anns} == {im["id"]}


def test_info_defaults_to_the_demo_bundle(capsys) -> None:  # noqa: ANN001
    assert main(["info"]) == 0
    assert "fastsam-demo" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# no output ever overwrites an input (issue 22): each refused before any work, bytes unchanged
# --------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def two_images(scenes_dir: Path, tmp_path: Path) -> Path:
    """``same/`` with ``a.png`` and ``b.png`` (demo scenes), in a fresh folder per test."""
    d = tmp_path / "same"
    d.mkdir()
    for name, src in zip(("a.png", "b.png"), sorted(scenes_dir.glob("*.png")), strict=False):
        (d / name).write_bytes(src.read_bytes())
    return d


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["--json", "a.png", "b.png"], "--json: 'a.png' exists", id="json-swallows"),
        pytest.param(["--jso", "a.png", "b.png"], "--json: 'a.png' exists", id="json-abbrev"),
        pytest.param(["--overlay", "a.png", "b.png"], "--overlay: 'a.png'", id="overlay-swallows"),
        pytest.param(["a.png", "--overlay", "a.png"], "--overlay: 'a.png' is the source", id="ov"),
        pytest.param(
            ["b.png", "--json", "a.png"], "--json: 'a.png' is an existing", id="json-img"
        ),
        pytest.param(["a.png", "b.png", "--json", "a.png"], "--json: 'a.png'", id="json-src"),
        pytest.param([".", "--out", ".", "--overlay"], "--out: '.' holds sources", id="out-dir"),
        pytest.param(
            ["a.png", "--json", "link.json"], "--json: 'link.json' is the source", id="ln"
        ),
        pytest.param(["a.png", "--overlay", "hard.png"], "is the source 'a.png'", id="hardlink"),
        pytest.param(
            ["a.png", "b.json", "--out", "."],
            "--out: would write 'b.json' over the source",
            id="per-frame",
        ),
    ],
)
def test_outputs_never_overwrite_a_source(
    two_images: Path, monkeypatch: pytest.MonkeyPatch, capsys, argv: list[str], needle: str
) -> None:  # noqa: ANN001
    monkeypatch.chdir(two_images)
    (two_images / "link.json").symlink_to("a.png")
    (two_images / "hard.png").hardlink_to("a.png")
    (two_images / "b.json").write_text('{"mine": 1}')
    before = _snapshot(two_images)
    assert main(["segment", *argv, "--threads", "1"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert needle in err, err
    assert _snapshot(two_images) == before
    assert (two_images / "link.json").is_symlink()


def test_save_video_into_the_folder_of_its_source_is_refused(video: Path, tmp_path: Path) -> None:
    d = tmp_path / "v"
    d.mkdir()
    (d / "clip.avi").write_bytes(video.read_bytes())
    before = _snapshot(d)
    proc = run_cli("segment", str(d / "clip.avi"), "--out", str(d), "--save-video")
    assert proc.returncode == EXIT_BAD_INPUT and "--out:" in proc.stderr, proc.stderr
    assert _snapshot(d) == before


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["a.png", "--json", "out.json"], id="json-file"),
        pytest.param(["--json", "-", "a.png", "b.png"], id="json-stdout-explicit"),
        pytest.param(["a.png", "--overlay", "old.png"], id="overlay-after-the-source"),
        pytest.param(["--overlay=old.png", "a.png"], id="overlay-equals"),
        pytest.param(["a.png", "b.png", "--out", "res", "--overlay"], id="out-elsewhere"),
    ],
)
def test_outputs_that_are_not_sources_are_written(
    two_images: Path, monkeypatch: pytest.MonkeyPatch, capsys, argv: list[str]
) -> None:  # noqa: ANN001
    monkeypatch.chdir(two_images)
    (two_images / "old.png").write_bytes(b"a previous overlay")
    (two_images / "out.json").write_text("{}")
    sources = {n: (two_images / n).read_bytes() for n in ("a.png", "b.png")}
    assert main(["segment", *argv, "--threads", "1", "--no-progress"]) == EXIT_OK
    assert {n: (two_images / n).read_bytes() for n in sources} == sources
    out = capsys.readouterr().out
    if "out.json" in argv:
        assert json.loads((two_images / "out.json").read_text())["num_masks"] > 0
    if "-" in argv:
        assert len(json.loads(out)) == 2
    if any("old.png" in a for a in argv):
        assert cv2.imread(str(two_images / "old.png")).shape == (240, 320, 3)


# --------------------------------------------------------------------------------------------
# unreadable files in a batch: skipped with a warning each, the rest processed, exit 5
# --------------------------------------------------------------------------------------------


def test_a_junk_file_in_a_folder_is_skipped_and_the_rest_processed(
    scenes_dir: Path, tmp_path: Path
) -> None:
    d = tmp_path / "batch"
    d.mkdir()
    pngs = sorted(scenes_dir.glob("*.png"))
    for k in range(4):
        (d / f"img{k}.png").write_bytes(pngs[k % len(pngs)].read_bytes())
    (d / "img2b.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "res"
    proc = run_cli("segment", str(d), "--out", str(out), "--threads", "1")
    assert proc.returncode == EXIT_SKIPPED, proc.stderr
    assert proc.stderr.count("warning: skipping") == 1 and "img2b.jpg" in proc.stderr
    assert "skipped 1 of 5 files" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"img{k}.json" for k in range(4)]


def test_a_batch_of_only_junk_is_bad_input_and_one_junk_file_its_own_error(
    tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    for name in ("x.jpg", "y.png"):
        (tmp_path / name).write_bytes(b"junk")
    assert main(["segment", str(tmp_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("warning: skipping") == 2 and "none of the 2 files" in err
    assert main(["segment", str(tmp_path / "x.jpg")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "skipping" not in err and "x.jpg" in err


def test_folders_collect_every_format_the_reader_reads(tmp_path: Path) -> None:
    """.gif .avif .pam .pfm (where this OpenCV writes them) are found in a folder and read."""
    image = generate_scene(EVAL_SEED_START + 7, 64, 48).image
    written = []
    for ext in (".png", ".gif", ".avif", ".pam", ".pfm"):
        data = image.astype(np.float32) / 255 if ext == ".pfm" else image
        try:
            if cv2.imwrite(str(tmp_path / f"x{ext[1:]}{ext}"), data):
                written.append(ext)
        except cv2.error:
            pass
    assert {".png", ".pam", ".pfm"} <= set(written)
    proc = run_cli("segment", str(tmp_path), "--json", "-", "--threads", "1")
    assert proc.returncode == EXIT_OK, proc.stderr
    sources = sorted(Path(d["image"]["source"]).suffix for d in json.loads(proc.stdout))
    assert sources == sorted(written)


# --------------------------------------------------------------------------------------------
# the demo bundle on frames that are not demo scenes: one notice per run
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "bundle", "notices"),
    [
        pytest.param(["a.png", "b.png"], False, 1, id="photos-once"),
        pytest.param(["scene_001000.png", "scene_001001.png"], False, 0, id="demo-scenes"),
        pytest.param(["a.png"], True, 0, id="bundle-given"),
    ],
)
def test_demo_bundle_notice_once_on_non_demo_frames(
    scenes_dir: Path, demo_bundle: Path, tmp_path: Path, capsys, names, bundle, notices
) -> None:  # noqa: ANN001
    for name, src in zip(names, sorted(scenes_dir.glob("*.png")), strict=False):
        (tmp_path / name).write_bytes(src.read_bytes())
    extra = ["--bundle", str(demo_bundle)] if bundle else []
    assert main(["segment", str(tmp_path), "--no-progress", "--threads", "1", *extra]) == 0
    err = capsys.readouterr().err
    assert err.count("notice: the model is the embedded demo bundle") == notices, err
    if notices:
        assert "--bundle DIR" in err and "fastsam-export" in err


@pytest.fixture(scope="module")
def moving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve frames of a moving-objects sequence, named in frame order."""
    from edge.demo.scenes import generate_sequence

    d = tmp_path_factory.mktemp("moving")
    for f in generate_sequence(EVAL_SEED_START, 12, 320, 240):
        assert cv2.imwrite(str(d / f"frame_{f.index:03d}.png"), f.image)
    return d


def test_track_gives_each_object_one_id_across_the_folder(moving_dir: Path, tmp_path: Path):
    out = tmp_path / "track.json"
    code = main(["segment", str(moving_dir), "--track", "--json", str(out), "--threads", "1",
                 "--no-progress", "--out", str(tmp_path / "o"), "--overlay"])  # fmt: skip
    assert code == EXIT_OK
    docs = json.loads(out.read_text())
    assert len(docs) == 12
    ids = [[m["track_id"] for m in d["masks"]] for d in docs]
    assert all(i == -1 for i in ids[0])  # nothing confirmed on the first frame (min 2)
    later = [set(i) - {-1} for i in ids[1:]]
    assert all(later) and len(set().union(*later)) < 3 * max(len(s) for s in later)
    assert (tmp_path / "o" / "frame_011.png").is_file()


def test_track_in_coco_attributes(moving_dir: Path, tmp_path: Path):
    out = tmp_path / "coco.json"
    code = main(["segment", str(moving_dir), "--track", "--format", "coco", "--json", str(out),
                 "--threads", "1", "--no-progress"])  # fmt: skip
    assert code == EXIT_OK
    anns = json.loads(out.read_text())
    assert all(isinstance(a["attributes"]["track_id"], int) for a in anns)
    assert any(a["attributes"]["track_id"] >= 1 for a in anns)


def test_without_track_no_track_ids(moving_dir: Path, tmp_path: Path):
    out = tmp_path / "plain.json"
    assert main(["segment", str(moving_dir / "frame_000.png"), "--json", str(out)]) == EXIT_OK
    assert all("track_id" not in m for m in json.loads(out.read_text())["masks"])


@pytest.mark.parametrize(
    ("flag", "value"), [("--track-min-frames", "0"), ("--track-max-missed", "-1")]
)
def test_bad_track_settings_name_the_flag(moving_dir: Path, flag: str, value: str, capsys):
    code = main(["segment", str(moving_dir), "--track", flag, value, "--no-progress"])
    assert code == EXIT_BAD_INPUT
    assert flag in capsys.readouterr().err
