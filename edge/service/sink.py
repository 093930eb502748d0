"""Result files: one directory per result, renamed into place when complete, with retention.

Layout under ``output.dir``::

    20261125T130102.123Z_00000042/      one result (UTC capture time, frame id)
    20261125T130102.123Z_00000042_p1/   a saved prompt on that kept frame (POST /prompt)
        result.json                     the `fastsam-edge segment` JSON schema
        overlay.jpg                     masks over the frame        (output.overlay;
                                        overlay.png with output.overlay_format = "png")
        frame.jpg                       the stored source frame     (output.frame)
    .partial-20261125T130104.456Z_.../  being written; never visible under a result name

Each file is written with :func:`edge.io.atomic_write_bytes` (temp file, fsync, rename) inside
the hidden ``.partial-*`` directory, which is then renamed to its final name and the parent
directory fsynced. A crash leaves at most a ``.partial-*`` directory, removed at the next start;
a full disk or any other write error is logged, counted, cleaned up, and the service goes on.

Retention (``max_results``, ``max_mb``, ``max_age_days``) deletes the oldest result
directories, and only directories whose names this module creates.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import re
import shutil
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.io import atomic_write_bytes, atomic_write_image
from edge.service.config import OutputConfig
from edge.service.telemetry import Metrics

_LOGGER = logging.getLogger(__name__)

RESULT_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z_\d{8,}(?:_p\d{1,6})?$")
"""Result directory names: ``<UTC time>Z_<frame id>``, a saved prompt ``..._p<n>``."""
MAX_PROMPT_RESULTS = 999_999
PARTIAL_PREFIX = ".partial-"
RESULT_JSON = "result.json"
OVERLAY_FILES = {"jpeg": "overlay.jpg", "png": "overlay.png"}
"""Overlay file name per ``output.overlay_format``."""


def result_name(wall_time: float, frame_id: int) -> str:
    """``20261125T130102.123Z_00000042``: sorts by time, unique per frame."""
    t = _dt.datetime.fromtimestamp(wall_time, _dt.UTC)
    return f"{t:%Y%m%dT%H%M%S}.{t.microsecond // 1000:03d}Z_{frame_id:08d}"


def result_frame_id(name: str) -> int:
    """The frame id in a result directory name (:data:`RESULT_NAME`)."""
    return int(name.split("Z_", 1)[1].split("_", 1)[0])


def _rename_into_place(tmp: Path, final: Path) -> None:
    """The commit point (a test hook: fault-injection tests block or fail here)."""
    os.rename(tmp, final)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tree_bytes(path: Path) -> int:
    total = 0
    try:
        for entry in os.scandir(path):
            try:
                total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                pass
    except OSError:
        pass
    return total


@dataclass
class _Entry:
    name: str
    nbytes: int
    mtime: float


@dataclass
class WriteResult:
    """Where a result went."""

    name: str
    dir: Path
    files: dict[str, str]


class ResultSink:
    """Writes results atomically and applies the retention policy."""

    def __init__(self, cfg: OutputConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.dir)
        self.metrics = metrics or Metrics()
        self._index: deque[_Entry] = deque()
        self._bytes = 0
        self._warned_full = False
        self._pool: ThreadPoolExecutor | None = None
        self.write_error: str | None = None
        """Why the last result could not be written (None once one is written again)."""
        self.last_failure: str | None = None
        """Why the last :meth:`write` wrote nothing (None after a write): said in answers."""

    def start(self) -> None:
        """Create the directory, remove leftovers of a crash, index existing results.

        Raises:
            OSError: The output directory cannot be created.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        entries: list[_Entry] = []
        for entry in os.scandir(self.dir):
            if entry.name.startswith(PARTIAL_PREFIX) and entry.is_dir(follow_symlinks=False):
                _LOGGER.warning("removing incomplete result %s (left by a crash)", entry.name)
                shutil.rmtree(entry.path, ignore_errors=True)
            elif RESULT_NAME.match(entry.name) and entry.is_dir(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                entries.append(_Entry(entry.name, _tree_bytes(Path(entry.path)), st.st_mtime))
        entries.sort(key=lambda e: e.name)
        self._index = deque(entries)
        self._bytes = sum(e.nbytes for e in entries)

    @property
    def count(self) -> int:
        """Result directories currently kept."""
        return len(self._index)

    @property
    def total_bytes(self) -> int:
        """Bytes of the kept result directories."""
        return self._bytes

    def free_bytes(self) -> int | None:
        """Free space of the output file system (None if it cannot be read)."""
        try:
            return shutil.disk_usage(self.dir).free
        except OSError:
            return None

    def write(
        self,
        doc: dict[str, Any],
        wall_time: float,
        frame_id: int,
        overlay: NDArray[np.uint8] | Callable[[], NDArray[np.uint8]] | None = None,
        frame: NDArray[np.uint8] | None = None,
        prompt: bool = False,
    ) -> WriteResult | None:
        """Write one result directory.

        Args:
            doc: The result JSON (a ``files`` entry listing the written files is added).
            wall_time: Capture time (epoch seconds), for the directory name.
            frame_id: Frame number, for the directory name.
            overlay: Overlay image, written as overlay.jpg (or overlay.png, by
                ``output.overlay_format``) when given; or a function returning it (e.g. a
                drawing still in progress). It is encoded and written (fsynced) in a helper
                thread while this one writes the other files.
            frame: Source frame, written as frame.jpg / frame.png when given.
            prompt: A saved prompt on a frame that may have a result already: named
                ``<name>_p<n>`` with the first free ``n``.

        Returns:
            The written result, or None when it was skipped (low disk) or failed (logged and
            counted; partial files removed; :attr:`last_failure` says why).
        """
        free = self.free_bytes()
        if free is not None and free < self.cfg.min_free_mb * 2**20:
            self.metrics.inc("fastsam_results_skipped_total", reason="disk_full")
            self.write_error = (
                f"only {free / 2**20:.0f} MiB free on {self.dir} (output.min_free_mb = "
                f"{self.cfg.min_free_mb:g})"
            )
            self.last_failure = f"not saved: {self.write_error}"
            if not self._warned_full:
                _LOGGER.error(
                    "output: only %.0f MiB free on %s (output.min_free_mb = %g): not writing "
                    "results until space is freed",
                    free / 2**20,
                    self.dir,
                    self.cfg.min_free_mb,
                )
                self._warned_full = True
            return None
        self._warned_full = False
        name = result_name(wall_time, frame_id)
        if prompt:
            name = self._free_prompt_name(name)
        tmp = self.dir / f"{PARTIAL_PREFIX}{name}"
        final = self.dir / name
        files = {"json": RESULT_JSON}
        if overlay is not None:
            files["overlay"] = OVERLAY_FILES[self.cfg.overlay_format]
        if frame is not None:
            files["frame"] = f"frame.{self.cfg.frame_format}"
        doc = {**doc, "files": files}
        try:
            if final.exists():
                raise FileExistsError(errno.EEXIST, "result already exists", str(final))
            tmp.mkdir(parents=True)
            pending: Future[None] | None = None
            if overlay is not None:
                pending = self._helper().submit(self._write_image, tmp / files["overlay"], overlay)
            try:
                if frame is not None:
                    self._write_image(tmp / files["frame"], frame)
                # compact: the C encoder (indented JSON goes through Python's, ~10x slower on
                # the polygons of 100 masks)
                data = json.dumps(doc, separators=(",", ":")).encode()
                atomic_write_bytes(tmp / RESULT_JSON, data)
            finally:
                if pending is not None:
                    pending.result()  # its error, if any, is this write's
            _rename_into_place(tmp, final)
            _fsync_dir(self.dir)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(exc, OSError):
                raise
            self.metrics.inc("fastsam_errors_total", kind="write")
            reason = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
            why = f"{exc.strerror or exc}{f' ({reason})' if reason else ''}"
            self.last_failure = f"not saved: {why}"
            if exc.errno == errno.EEXIST:
                # a name taken (two writes of one frame): this result only, not the disk
                _LOGGER.warning("output: result %s already exists; not written again", name)
                return None
            _LOGGER.error(
                "output: cannot write result %s: %s%s", name, exc, f" ({reason})" if reason else ""
            )
            self.write_error = why
            return None
        self.write_error = None
        self.last_failure = None
        nbytes = _tree_bytes(final)
        self._index.append(_Entry(name, nbytes, wall_time))
        self._bytes += nbytes
        self.metrics.inc("fastsam_results_written_total")
        self.apply_retention(wall_time)
        return WriteResult(name, final, files)

    def _free_prompt_name(self, base: str) -> str:
        """``<base>_p<n>`` with the first ``n`` whose directory (or partial one) is free."""
        for n in range(1, MAX_PROMPT_RESULTS + 1):
            name = f"{base}_p{n}"
            if (
                not (self.dir / name).exists()
                and not (self.dir / f"{PARTIAL_PREFIX}{name}").exists()
            ):
                return name
        raise FileExistsError(errno.EEXIST, "no free prompt result name", base)

    def _helper(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="result-writer")
        return self._pool

    def close(self) -> None:
        """Let the helper thread go (idempotent; a later write starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _write_image(
        self, path: Path, image: NDArray[np.uint8] | Callable[[], NDArray[np.uint8]]
    ) -> None:
        if callable(image):
            image = image()
        if path.suffix == ".jpg":
            import cv2

            ok, buf = cv2.imencode(
                ".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality]
            )
            if not ok:
                raise OSError(errno.EIO, f"cannot encode {path.name} as JPEG", str(path))
            atomic_write_bytes(path, buf.tobytes())
        else:
            atomic_write_image(path, image)

    def apply_retention(self, now_wall: float) -> int:
        """Delete the oldest results beyond the limits; returns how many were deleted."""
        c = self.cfg
        deleted = 0
        max_bytes = c.max_mb * 2**20
        max_age = c.max_age_days * 86400.0
        while self._index:
            oldest = self._index[0]
            over = (
                (c.max_results and len(self._index) > c.max_results)
                or (max_bytes and self._bytes > max_bytes and len(self._index) > 1)
                or (max_age and now_wall - oldest.mtime > max_age)
            )
            if not over:
                break
            self._index.popleft()
            self._bytes -= oldest.nbytes
            try:
                shutil.rmtree(self.dir / oldest.name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.metrics.inc("fastsam_errors_total", kind="write")
                _LOGGER.error("output: cannot delete old result %s: %s", oldest.name, exc)
                continue
            deleted += 1
        if deleted:
            self.metrics.inc("fastsam_results_deleted_total", deleted)
        return deleted
