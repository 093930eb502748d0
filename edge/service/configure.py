"""``fastsam-edge configure``: a first-run config that does something.

It writes a short ``config.toml`` with the chosen bundle, the frame source and one trigger
(an interval timer by default) and, for an open-vocabulary (YOLOE) bundle, the words to find
(``--vocab``), so that ``systemctl enable --now fastsam-edge`` produces
results without editing anything. Every other key keeps its default; ``fastsam-edge serve
--print-config`` lists them all. An existing config is only replaced with ``--force`` (the old
one is kept as ``config.toml.bak``).
"""

from __future__ import annotations

import argparse
import grp
import os
import tomllib
from pathlib import Path
from typing import Any

from edge.demo import is_demo_name
from edge.service.config import (
    DEFAULT_CONFIG_PATH,
    DEMO,
    ConfigError,
    ServiceConfig,
    parse_config,
    toml_value,
)

TRIGGERS = ("interval", "motion", "gpio", "http")
DEFAULT_INTERVAL_S = 60.0
SERVICE_GROUP = "fastsam-edge"


def first_run_settings(
    bundle: str,
    trigger: str = "interval",
    interval_s: float = DEFAULT_INTERVAL_S,
    source: str = "picamera2",
    source_path: str = "",
    device: str = "",
    gpio_pin: int | None = None,
    vocabulary: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """The tables of a first-run config (only what differs from the defaults matters);
    ``vocabulary``: ``processing.vocabulary`` (validated with the rest by :func:`validate`).

    Raises:
        ConfigError: Unknown trigger, or a replay source without a path.
    """
    if trigger not in TRIGGERS:
        raise ConfigError(f"--trigger: expected one of {', '.join(TRIGGERS)}, got {trigger!r}")
    src: dict[str, Any] = {"kind": source}
    if source_path:
        src["path"] = source_path
    if device:
        src["device"] = device
    tables: dict[str, dict[str, Any]] = {"model": {"bundle": bundle}, "source": src}
    if vocabulary:
        tables["processing"] = {"vocabulary": list(vocabulary)}
    if trigger == "interval":
        tables["trigger.interval"] = {"enabled": True, "seconds": float(interval_s)}
    elif trigger == "motion":
        tables["trigger.motion"] = {"enabled": True}
    elif trigger == "gpio":
        tables["trigger.gpio"] = {"enabled": True} | (
            {"pin": gpio_pin} if gpio_pin is not None else {}
        )
    return tables


def render_config(tables: dict[str, dict[str, Any]], trigger: str) -> str:
    """TOML text of the tables with a header saying what it does and where the rest is."""
    lines = [
        "# fastsam-edge service configuration, written by `fastsam-edge configure`.",
        "# Only these keys differ from the defaults; `fastsam-edge serve --print-config`",
        "# lists every key with its documentation. Check it with `fastsam-edge doctor`.",
    ]
    what = {
        "interval": "segments a frame every trigger.interval.seconds",
        "motion": "segments a frame when the picture changes",
        "gpio": "segments a frame on a GPIO edge (button, PIR sensor)",
        "http": "segments a frame on POST /trigger only",
    }[trigger]
    lines.append(f"# The service {what}.")
    lines.append("# POST /trigger on the HTTP API (http.port) works with every trigger.")
    lines.append("# To reach the API from the network (http.host), give it a token first:")
    lines.append("#   openssl rand -hex 16 | sudo tee /etc/fastsam-edge/token")
    lines.append('#   [http] token_file = "/etc/fastsam-edge/token"')
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def validate(tables: dict[str, dict[str, Any]], origin: str) -> ServiceConfig:
    """Parse the tables as the service would (a bad value fails here, not at start)."""
    nested: dict[str, Any] = {}
    for name, table in tables.items():
        node = nested
        for part in name.split("."):
            node = node.setdefault(part, {})
        node.update(table)
    return parse_config(nested, origin=origin)


def check_round_trip(text: str, tables: dict[str, dict[str, Any]], origin: str) -> None:
    """``text`` parses with ``tomllib`` into exactly ``tables`` and validates as the service
    would (so "written" is never said of a file the service cannot read).

    Raises:
        ConfigError: It does not parse, or parses to other values.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: the config written does not parse as TOML: {exc}") from None
    for name, table in tables.items():
        node: Any = data
        for part in name.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if node != table:
            raise ConfigError(f"{origin}: [{name}] reads back as {node!r}, not {table!r}")
    parse_config(data, origin=origin)


def check_bundle(bundle: str) -> str:
    """The bundle as an absolute path (``demo`` stays), checked to be a readable bundle.

    Raises:
        FastSAMEdgeError: Not a bundle directory, or a malformed ``bundle.json``.
    """
    if is_demo_name(bundle):
        return bundle
    from edge.bundle import read_manifest

    path = Path(bundle).absolute()
    read_manifest(path)
    return str(path)


def parse_vocab(bundle: str, text: str | None) -> list[str]:
    """``--vocab "person, dog"`` as words; only an open-vocabulary (YOLOE) bundle takes them.

    Raises:
        ConfigError: Words for a FastSAM bundle (naming ``--vocab`` and the bundle's kind).
    """
    words = [w.strip() for w in (text or "").split(",") if w.strip()]
    if not words:
        return []
    yoloe = False
    if bundle != DEMO:
        from edge.bundle import read_manifest

        yoloe = read_manifest(Path(bundle)).yoloe is not None
    if not yoloe:
        raise ConfigError(
            f"--vocab: the bundle {bundle!r} is FastSAM (class-agnostic: masks have no names); "
            "a vocabulary needs an open-vocabulary YOLOE bundle (fastsam-export "
            "yoloe-11s-seg.pt)"
        )
    return words


def write_config(path: Path, text: str, force: bool) -> str:
    """Write atomically (mode 0640, group fastsam-edge when it exists); returns what it did.

    Raises:
        ConfigError: The file exists and ``force`` is not set.
    """
    from edge.io import atomic_write_bytes

    existed = path.exists()
    if existed and not force:
        raise ConfigError(f"{path}: exists; keeping it (--force replaces it, keeping a .bak copy)")
    if existed:
        backup = path.with_name(path.name + ".bak")
        atomic_write_bytes(backup, path.read_bytes())
        os.chmod(backup, 0o640)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    os.chmod(path, 0o640)
    if os.geteuid() == 0:
        try:
            gid = grp.getgrnam(SERVICE_GROUP).gr_gid
        except KeyError:
            gid = -1
        if gid >= 0:
            os.chown(path, 0, gid)
            if existed:
                os.chown(path.with_name(path.name + ".bak"), 0, gid)
    return "replaced (old one: " + path.name + ".bak)" if existed else "written"


def cmd_configure(args: argparse.Namespace) -> int:
    """``configure``: write the first-run config."""
    bundle = check_bundle(args.bundle)
    vocabulary = parse_vocab(bundle, args.vocab)
    tables = first_run_settings(
        bundle,
        args.trigger,
        args.interval,
        args.source,
        args.source_path or "",
        args.device or "",
        args.gpio_pin,
        vocabulary,
    )
    path = Path(args.config)
    validate(tables, str(path))
    try:
        text = render_config(tables, args.trigger)
    except ValueError as exc:  # undecodable bytes of an argument
        raise ConfigError(f"configure: cannot write {exc}; pass UTF-8 arguments") from None
    check_round_trip(text, tables, str(path))
    if args.print:
        print(text, end="")
        return 0
    done = write_config(path, text, args.force)
    try:  # what the service will read, not what was meant to be written
        written = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: written but cannot be read back: {exc}") from None
    check_round_trip(written, tables, str(path))
    print(
        f"configure: {path} {done}: bundle {bundle}, source {args.source}, trigger {args.trigger}"
    )
    print("next: fastsam-edge doctor; then sudo systemctl restart fastsam-edge")
    return 0


def add_configure_command(sub: Any) -> None:
    """Add ``configure`` to the ``fastsam-edge`` subparsers."""
    c = sub.add_parser(
        "configure",
        help="write a first-run service config (bundle, source, one trigger)",
        description="Write a short config.toml that makes the service produce results: the "
        "bundle, the frame source and one trigger (default: an interval timer).",
    )
    c.add_argument(
        "--config", default=DEFAULT_CONFIG_PATH, help="file to write (default %(default)s)"
    )
    c.add_argument(
        "--bundle",
        default=DEMO,
        help='model bundle directory, or "demo" / "demo-yoloe" (default: demo)',
    )
    c.add_argument(
        "--trigger",
        choices=TRIGGERS,
        default="interval",
        help="what starts a segmentation (default: interval; http = only POST /trigger)",
    )
    c.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        metavar="S",
        help="seconds between segmentations with --trigger interval (default %(default)g)",
    )
    c.add_argument(
        "--source",
        choices=["picamera2", "opencv", "replay", "demo"],
        default="picamera2",
        help="frame source (default: picamera2, the Pi camera)",
    )
    c.add_argument("--source-path", help="replay: folder of images or a video file")
    c.add_argument("--device", help='opencv: camera index or device path, e.g. "/dev/video0"')
    c.add_argument("--gpio-pin", type=int, help="gpio: BCM pin (default 17)")
    c.add_argument(
        "--vocab",
        metavar="WORDS",
        help='YOLOE bundles: the words to find, comma-separated, e.g. "person,dog,red car" '
        "(processing.vocabulary; default: the bundle's)",
    )
    c.add_argument("--force", action="store_true", help="replace an existing config")
    c.add_argument("--print", action="store_true", help="print the config instead of writing")
    c.set_defaults(func=cmd_configure)
