"""Small JSON files the service keeps in its state directory (``service.state_dir``).

What a running service learns and must remember across restarts (the vocabulary set at
runtime, the Home Assistant entities it announced) lives here, never in the user's config
file. Each file is written atomically (a crash leaves the old file or none); a file that is
missing, unreadable, not JSON or of another shape is logged once and ignored, so a corrupt
state never stops the service.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge.io import atomic_write_json

_LOGGER = logging.getLogger("edge.service")

STATE_VERSION = 1
"""The ``version`` of every state file; another version is ignored (logged)."""


class StateFile:
    """One JSON object in the state directory.

    Args:
        path: The file (its directory is created on the first save).
        what: What it holds, for log lines (e.g. ``"vocabulary"``).
    """

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what

    def load(self) -> dict[str, Any] | None:
        """The saved object (without ``version``), or ``None`` when there is none or it is
        unusable (logged as a WARNING with the reason; the file is left for inspection)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._ignore(f"cannot read it: {exc.strerror or exc}")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            return self._ignore(f"not JSON ({exc})")
        if not isinstance(doc, dict):
            return self._ignore(f"expected a JSON object, got {type(doc).__name__}")
        if doc.get("version") != STATE_VERSION:
            return self._ignore(f"version {doc.get('version')!r}, expected {STATE_VERSION}")
        return {k: v for k, v in doc.items() if k != "version"}

    def _ignore(self, why: str) -> None:
        _LOGGER.warning("state: ignoring %s (the saved %s): %s", self.path, self.what, why)
        return None

    def save(self, doc: dict[str, Any]) -> bool:
        """Write ``doc`` atomically; False (logged as an ERROR) when it cannot be written,
        e.g. a read-only state directory: the service goes on, it only forgets on restart."""
        try:
            atomic_write_json(self.path, {"version": STATE_VERSION, **doc})
        except (OSError, ValueError) as exc:
            _LOGGER.error(
                "state: cannot save the %s in %s (it is forgotten on restart): %s",
                self.what,
                self.path,
                exc,
            )
            return False
        return True

    def remove(self) -> None:
        """Forget the saved object (a missing file is fine; other errors are logged)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            _LOGGER.error("state: cannot remove %s: %s", self.path, exc)
