"""Flags shared by every ``fastsam-edge`` / ``fastsam-export`` subcommand, one meaning each.

* ``--json [FILE|-]``: JSON output to FILE, or stdout for ``-`` / no value.
* ``--precision``: detector precision (a list only in ``bench``); ``--clip-precision``: CLIP's.
* ``--threads``: one count (a sweep only in ``bench``).
* ``--debug``, ``--log-level``, ``--version``: before or after the subcommand.

Output paths never get missing parent directories created: a typo in a path is an error, not a
new directory tree (:func:`check_parent`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.errors import InputError

LOG_LEVELS = ("debug", "info", "warning", "error")
REMOVED_IN = "0.3"
"""Release that drops the deprecated spellings."""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_EMPTY = 3
EXIT_OUTPUT = 4
EXIT_SKIPPED = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def package_version() -> str:
    """The installed ``fastsam-edge`` version (the source tree's when not installed)."""
    try:
        from importlib.metadata import version

        return version("fastsam-edge")
    except Exception:  # not installed (PYTHONPATH checkout)
        from edge import __version__

        return __version__


def add_global_options(p: argparse.ArgumentParser, prog: str, top: bool) -> None:
    """``--debug``, ``--log-level`` and ``--version`` on a parser.

    On subparsers (``top=False``) the defaults are suppressed, so a value given before the
    subcommand is not overwritten by the subparser's default.
    """
    default: Any = argparse.SUPPRESS
    p.add_argument(
        "--debug",
        action="store_true",
        default=False if top else default,
        help="verbose logging (same as --log-level debug)",
    )
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=None if top else default,
        help="log level on stderr (default: warning)",
    )
    p.add_argument(
        "--version", action="version", version=f"{prog} {package_version()}", help="print version"
    )


def add_json_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--json [FILE|-]``."""
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE|-",
        help=f"write {what} as JSON to FILE, or to stdout with '-' or no value",
    )


class DeprecatedAlias(argparse.Action):
    """An old spelling: warns on stderr (once per use) and stores into the new flag's dest."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kw: Any):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        warn_deprecated(f"{option_string}", self.new)
        setattr(namespace, self.dest, values)


def warn_deprecated(old: str, new: str) -> None:
    """One deprecation line on stderr."""
    print(
        f"warning: {old} is deprecated and will be removed in {REMOVED_IN}; use {new}",
        file=sys.stderr,
    )


def check_parent(flag: str, path: str | Path) -> Path:
    """``path`` whose parent directory must already exist.

    Raises:
        InputError: The parent is missing or not a directory (named with the flag).
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise InputError(
            f"{flag}: directory {str(parent)!r} {what} (parent directories are not created; "
            "create it first)"
        )
    return path


def prepare_out_dir(flag: str, path: str | Path) -> Path:
    """Create the output folder ``path`` itself (not its parents) and return it.

    Raises:
        InputError: Its parent is missing, or ``path`` is a file.
    """
    path = check_parent(flag, path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag}: {str(path)!r} exists and is not a directory")
    path.mkdir(exist_ok=True)
    return path


def emit_json(flag: str, target: str, obj: Any) -> str:
    """Write ``obj`` as JSON to ``target`` (``-``: stdout; else atomically to a file).

    Returns:
        Where it went (``stdout`` or the path).
    """
    if target == "-":
        sys.stdout.write(json.dumps(obj, indent=1) + "\n")
        sys.stdout.flush()
        return "stdout"
    from edge.io import atomic_write_json

    atomic_write_json(check_parent(flag, target), obj)
    return str(target)


def int_arg(flag: str, hint: str = "") -> Any:
    """argparse ``type`` for one positive integer, with a hint for lists given by mistake."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a positive integer, got {text!r}{hint}"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
        return value

    parse.__name__ = flag
    return parse
