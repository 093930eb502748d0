"""What a path is, for error messages that say so (stdlib only: the bundle reader uses it too)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from edge.errors import InputError


def describe_path_kind(path: Path) -> str | None:
    """What ``path`` is when it is not a readable regular file (``None`` when it is one).

    Returns phrases such as ``"does not exist"``, ``"is a directory"``, ``"is a FIFO (named
    pipe)"``, ``"is a symlink loop"``, ``"is a dangling symlink to '...'"``.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        try:
            if path.is_symlink():
                return f"is a dangling symlink to {os.readlink(path)!r}"
        except OSError:
            pass
        return "does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        if exc.errno == errno.ENOTDIR:  # a parent is a file
            return "cannot exist: a parent path is a file, not a directory"
        if exc.errno == errno.EACCES:  # on a parent directory
            return "cannot be read (permission denied)"
        return f"cannot be read ({exc.strerror})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    return "is not a regular file"


def check_regular_file(path: str | Path, what: str, error: type[Exception] = InputError) -> Path:
    """Return ``path`` if it is a regular file, else raise ``error`` saying what it is.

    Opening a FIFO would block and reading a directory fails with a misleading message, so every
    file the runtime reads is checked here first.

    Args:
        path: The file.
        what: The field or flag named in the message (``"image"``, ``"--prompts"``).
        error: Exception type to raise.
    """
    path = Path(path)
    kind = describe_path_kind(path)
    if kind is not None:
        raise error(f"{what}: {str(path)!r} {kind}")
    return path
