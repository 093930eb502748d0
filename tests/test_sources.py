"""``edge.sources``: SOURCE arguments to frames (images, folders, globs, videos)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import InputError
from edge.sources import count_frames, expand_sources, iter_frames


def _img(path: Path, value: int = 0, hw: tuple[int, int] = (24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*hw, 3), value, np.uint8))
    return path


def _video(path: Path, frames: int, hw: tuple[int, int] = (48, 64)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, hw[::-1])
    for k in range(frames):
        writer.write(np.full((*hw, 3), 20 * k % 255, np.uint8))
    writer.release()
    return path


def test_order_dedup_and_kinds(tmp_path: Path) -> None:
    a = _img(tmp_path / "d" / "a.png")
    b = _img(tmp_path / "d" / "b.jpg")
    (tmp_path / "d" / "readme.txt").write_text("x")
    v = _video(tmp_path / "v.avi", 3)
    got = expand_sources([str(v), str(tmp_path / "d"), str(a)])
    assert [s.path for s in got] == [v, a, b]  # a listed once, in first-seen order
    assert [s.video for s in got] == [True, False, False]


def test_glob_recursive_and_no_match(tmp_path: Path) -> None:
    _img(tmp_path / "x" / "y" / "deep.png")
    _img(tmp_path / "top.png")
    got = expand_sources([str(tmp_path / "**" / "*.png")])
    assert sorted(p.path.name for p in got) == ["deep.png", "top.png"]
    with pytest.raises(InputError, match="glob .* matches no image or video file"):
        expand_sources([str(tmp_path / "*.jpg")])


def test_unique_names_and_image_ids(tmp_path: Path) -> None:
    _img(tmp_path / "one" / "scene.png", 10)
    _img(tmp_path / "two" / "scene.png", 20)
    _img(tmp_path / "two" / "scene.jpg", 30)
    sources = expand_sources([str(tmp_path / "one"), str(tmp_path / "two")])
    frames = list(iter_frames(sources))
    assert [f.name for f in frames] == ["scene", "scene-2", "scene-3"]
    assert [f.image_id for f in frames] == [1, 2, 3]
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 30, 20]  # jpg sorts before png


@pytest.mark.parametrize(("stride", "indices"), [(1, [0, 1, 2, 3, 4, 5, 6]), (3, [0, 3, 6]),
                                                 (10, [0])])  # fmt: skip
def test_video_stride(tmp_path: Path, stride: int, indices: list[int]) -> None:
    sources = expand_sources([str(_video(tmp_path / "v.avi", 7))])
    frames = list(iter_frames(sources, stride))
    assert [f.index for f in frames] == indices
    assert count_frames(sources, stride) == len(indices)
    assert [f.name for f in frames] == [f"v_{i:06d}" for i in indices]
    assert frames[0].file_name == "v.avi#0" and frames[0].image.shape == (48, 64, 3)


def test_video_pixel_limit_and_bad_stride(tmp_path: Path) -> None:
    sources = expand_sources([str(_video(tmp_path / "v.avi", 2))])
    with pytest.raises(InputError, match="64x48 frames .* above the limit of 100"):
        list(iter_frames(sources, max_pixels=100))
    with pytest.raises(InputError, match="--vid-stride"):
        list(iter_frames(sources, 0))


def test_corrupt_video_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputError, match="bad.mp4"):
        list(iter_frames(expand_sources([str(bad)])))


def test_cli_and_service_replay_list_a_folder_with_one_table(tmp_path: Path) -> None:
    """Every extension the reader knows (and only those) is a source for both."""
    from edge.io import IMAGE_EXTS
    from edge.service.sources import ReplaySource

    names = sorted(f"x{ext[1:]}{ext}" for ext in IMAGE_EXTS) + ["notes.txt", "clip.mp4"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    images = sorted(s.path.name for s in expand_sources([str(tmp_path)]) if not s.video)
    replay = ReplaySource(tmp_path)
    replay.open()
    assert images == sorted(p.name for p in replay._files) == names[:-2]
    assert {".gif", ".avif", ".pam", ".pfm"} <= IMAGE_EXTS
