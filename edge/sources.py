"""Inputs of ``fastsam-edge segment``: images, folders, globs and video files, as frames.

``SOURCE`` arguments expand in order: an existing file is an image, or a video when its
extension is a video container (:data:`VIDEO_EXTS`); a directory contributes its image and video
files (sorted by name, not recursive; other files are skipped); anything else is a glob pattern
(``**`` recurses). Image files are those of :data:`edge.io.IMAGE_EXTS`, the formats the reader
reads (the service's replay source lists folders with the same table). Every frame gets a
unique output name (the file stem, ``_<frame>`` for video frames, ``-2``, ``-3`` ... when stems
collide), so one result per frame can go into one folder; :func:`check_outputs` refuses outputs
that would land on a source.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError
from edge.io import IMAGE_EXTS
from edge.paths import describe_path_kind

_LOGGER = logging.getLogger(__name__)

VIDEO_EXTS = frozenset(".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .wmv .flv .ts .mjpeg".split())
"""File extensions read as videos (through ``cv2.VideoCapture``)."""


@dataclass(frozen=True)
class Source:
    """One input file.

    Attributes:
        path: The file.
        video: Whether it is read as a video.
    """

    path: Path
    video: bool


@dataclass
class Frame:
    """One frame to segment: from a file or a video (``segment``), a camera or a replay (the
    service). The one frame type of the CLI and the service.

    Attributes:
        image: (H, W, 3) uint8 BGR pixels.
        name: Its name: the output stem for ``segment`` (``photo``, ``clip_000120``), the file
            or camera name in the service (``scene_001234``, ``picamera2:0``).
        index: Frame number: within its video for ``segment`` (0 for an image); counted across
            reopens in the service (set by ``ResilientSource``).
        timestamp: Capture time, seconds since the epoch (0: not captured live).
        source: The file it came from (``segment``; ``None`` for service sources).
        image_id: Running number from 1 over a ``segment`` run (COCO ``image_id``; 0 otherwise).
    """

    image: NDArray[np.uint8]
    name: str
    index: int = 0
    timestamp: float = 0.0
    source: Source | None = None
    image_id: int = 0

    @property
    def video(self) -> bool:
        """Whether it is a frame of a video file."""
        return self.source is not None and self.source.video

    @property
    def file_name(self) -> str:
        """The source's file name, with ``#frame`` for video frames (COCO ``file_name``)."""
        if self.source is None:
            return self.name
        base = self.source.path.name
        return f"{base}#{self.index}" if self.source.video else base


def _kind(path: Path) -> bool | None:
    """True: video, False: image, None: neither (by extension)."""
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return True
    if ext in IMAGE_EXTS:
        return False
    return None


def expand_sources(specs: list[str]) -> list[Source]:
    """Expand ``SOURCE`` arguments into files, in order, without duplicates.

    Raises:
        InputError: A path that does not exist and matches nothing as a glob, a folder or glob
            without any image or video file.
    """
    out: dict[Path, Source] = {}
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            out.setdefault(path, Source(path, _kind(path) is True))
            continue
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            what = f"{spec!r} is a directory with"
        elif glob.has_magic(spec) and not path.exists():
            files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            what = f"glob {spec!r} matches"
        else:
            kind = describe_path_kind(path) or "is not readable"
            raise InputError(f"source: {spec!r} {kind} (expected an image, video, folder or glob)")
        found = 0
        for f in files:
            kind = _kind(f)
            if kind is None:
                _LOGGER.debug("source: skipping %s (not an image or video extension)", f)
                continue
            out.setdefault(f, Source(f, kind))
            found += 1
        if not found:
            raise InputError(
                f"source: {what} no image or video file "
                f"(extensions: {', '.join(sorted(IMAGE_EXTS | VIDEO_EXTS))})"
            )
    return list(out.values())


def _open_video(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"source: {str(path)!r} is not a readable video (corrupt or unsupported)")
    return cap


def count_frames(sources: list[Source], vid_stride: int = 1) -> int | None:
    """Frames :func:`iter_frames` will yield (``None`` when a video does not tell its length).

    A video that does not open counts 0 frames: :func:`iter_frames` reports it.
    """
    total = 0
    for s in sources:
        if not s.video:
            total += 1
            continue
        try:
            cap = _open_video(s.path)
        except InputError:
            continue
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        if n <= 0:
            return None
        total += math.ceil(n / vid_stride)
    return total


def _unique_names(sources: list[Source]) -> dict[Path, str]:
    names: dict[Path, str] = {}
    used: set[str] = set()
    for s in sources:
        base = s.path.stem or s.path.name
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        names[s.path] = name
    return names


def iter_frames(
    sources: list[Source],
    vid_stride: int = 1,
    max_pixels: int | None = None,
    on_skip: Callable[[Source, str], None] | None = None,
) -> Iterator[Frame]:
    """Yield the frames of ``sources``: each image once, every ``vid_stride``-th video frame.

    Args:
        sources: From :func:`expand_sources`.
        vid_stride: Keep video frames 0, N, 2N, ... (skipped frames are grabbed, not decoded).
        max_pixels: Refuse images and videos whose frames have more pixels (images: checked
            from the header before decoding, by :func:`edge.io.read_image`); ``None``: the
            reader's default limit for images, none for videos.
        on_skip: Called with the source and the reason for each file that cannot be read
            (corrupt, unsupported, above ``max_pixels``), which is then skipped; ``None``: such
            a file raises. A video that fails after some frames just ends.

    Raises:
        InputError: An unreadable image or video or a frame above ``max_pixels`` (without
            ``on_skip``), or ``vid_stride < 1``.
    """
    if isinstance(vid_stride, bool) or not isinstance(vid_stride, int) or vid_stride < 1:
        raise InputError(f"--vid-stride: expected a positive integer, got {vid_stride!r}")
    from edge.io import read_image

    def read(path: Path) -> NDArray[np.uint8]:
        return read_image(path) if max_pixels is None else read_image(path, max_pixels)

    names = _unique_names(sources)
    image_id = 0
    for s in sources:
        try:
            if not s.video:
                image = read(s.path)
                image_id += 1
                yield Frame(image, names[s.path], 0, source=s, image_id=image_id)
                continue
            for index, image in _video_frames(s, vid_stride, max_pixels):
                image_id += 1
                yield Frame(
                    image, f"{names[s.path]}_{index:06d}", index, source=s, image_id=image_id
                )
        except InputError as exc:
            if on_skip is None:
                raise
            on_skip(s, str(exc))


def _video_frames(
    s: Source, vid_stride: int, max_pixels: int | None
) -> Iterator[tuple[int, NDArray[np.uint8]]]:
    """``(index, frame)`` of every ``vid_stride``-th frame of a video source.

    Raises:
        InputError: The video does not open, has frames above ``max_pixels`` or no readable
            first frame.
    """
    cap = _open_video(s.path)
    try:
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if max_pixels is not None and w * h > max_pixels:
            raise InputError(
                f"source: {str(s.path)!r} has {w}x{h} frames ({w * h} pixels), above the "
                f"limit of {max_pixels}; raise --max-pixels"
            )
        index = 0
        while True:
            if index % vid_stride:
                if not cap.grab():
                    break
                index += 1
                continue
            ok, image = cap.read()
            if not ok or image is None:
                if index == 0:
                    raise InputError(f"source: {str(s.path)!r} has no readable frame")
                break
            yield index, np.ascontiguousarray(image)
            index += 1
    finally:
        cap.release()


def _identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of what ``path`` names after symlinks; ``None`` when absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_outputs(
    sources: list[Source],
    files: list[tuple[str, Path]],
    out_dir: Path | None = None,
    out_images: bool = False,
) -> None:
    """Refuse outputs that would overwrite a source, before anything is read or written.

    Files are compared by identity (device and inode, after symlinks), so a link or another
    spelling of a source is caught too.

    Args:
        sources: From :func:`expand_sources`.
        files: ``(flag, path)`` of every single output file (``--json FILE``, ``--overlay
            FILE``, the COCO side file).
        out_dir: ``--out DIR`` (per-frame ``NAME.json``, ``images.json``), if given.
        out_images: Whether images or videos are also written into ``out_dir`` (``--overlay``,
            ``--save-video``): then ``out_dir`` must not hold any source at all, since an
            overlay ``photo.png`` could replace a source of that name.

    Raises:
        InputError: Naming the flag, the output and the source.
    """
    by_id = {i: s for s in sources if (i := _identity(s.path)) is not None}
    for flag, path in files:
        ident = _identity(path)
        src = by_id.get(ident) if ident is not None else None
        if src is not None:
            raise InputError(
                f"{flag}: {str(path)!r} is the source {str(src.path)!r}; writing there would "
                "destroy it: choose another output path"
            )
    if out_dir is None:
        return
    out_id = _identity(out_dir)
    if out_id is None:
        return
    inside = [s for s in sources if _identity(s.path.parent) == out_id]
    if not inside:
        return
    if out_images:
        raise InputError(
            f"--out: {str(out_dir)!r} holds sources (e.g. {str(inside[0].path)!r}); the "
            "overlays written into it could replace them: choose another --out DIR"
        )
    names = _unique_names(sources)
    patterns = [
        re.escape(names[s.path]) + (r"_\d{6}" if s.video else "") + r"\.json" for s in sources
    ]
    written = re.compile("|".join(["images\\.json", *patterns]))
    for s in inside:
        if written.fullmatch(s.path.name):
            raise InputError(
                f"--out: would write {str(out_dir / s.path.name)!r} over the source "
                f"{str(s.path)!r}: choose another --out DIR"
            )
