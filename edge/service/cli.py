"""The service subcommands of ``fastsam-edge``: ``serve``, ``doctor``, ``install-service``,
``configure``.

``edge.cli.build_parser`` calls :func:`add_service_commands`; heavy imports happen inside the
command functions only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from edge.cliargs import add_json_option
from edge.service.config import DEFAULT_CONFIG_PATH, ConfigError
from edge.service.configure import add_configure_command

DEMO_PAGE = {"source.loop": True, "trigger.interval.seconds": 1.0}
"""``serve --demo --http``: endless scenes, one segmented per second, so that the page's live
view shows each scene with its own masks (a live source would show scenes changing between
segmentations: the demo's scenes, unlike a camera's, change completely every frame)."""


def _override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set http.port=8081")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string
    return key.strip(), value


def start_warnings(cfg: Any) -> list[str]:
    """What ``serve`` warns about once at start, before the model is loaded.

    * the bundle has CLIP but the tokenizer packages are missing: text prompts will be refused;
    * the embedded demo bundle on a source that is not the demo's scenes (a camera, a replay of
      other files): its masks mean nothing there.

    Args:
        cfg: The service configuration.

    Returns:
        The warning lines (none when all is well; a bundle that cannot be read is left to the
        loader's error).
    """
    from edge.bundle import read_manifest
    from edge.demo import DEMO_BUNDLE_NOTICE, is_demo_name, looks_like_demo_scene, resolve_bundle
    from edge.errors import FastSAMEdgeError
    from edge.io import IMAGE_EXTS
    from edge.service.status import text_prompt_problem
    from edge.tokenizer import missing_text_deps

    out = []
    demo = is_demo_name(cfg.model.bundle)
    try:
        manifest = read_manifest(resolve_bundle(cfg.model.bundle))
    except (FastSAMEdgeError, OSError):
        manifest = None
    if manifest is not None and manifest.has_text and missing_text_deps():
        out.append(f"text prompts are off: {text_prompt_problem(manifest)}")
    if demo and cfg.source.kind != "demo":
        path = Path(cfg.source.path or ".")
        try:
            names = (
                [p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS]
                if cfg.source.kind == "replay" and path.is_dir()
                else [path.name]
            )
        except OSError:  # the source reports it
            names = []
        if cfg.source.kind != "replay" or not all(map(looks_like_demo_scene, names)):
            where = "model.bundle (fastsam-edge configure --bundle DIR)"
            out.append(DEMO_BUNDLE_NOTICE.format(flag=where))
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    """``serve``: run the service (see docs/service.md)."""
    from edge.service.config import demo_config, load_config, render_example_config

    if args.print_config:
        sys.stdout.write(render_example_config())
        return 0
    overrides = dict(_override(t) for t in args.set or [])
    if args.out:
        overrides["output.dir"] = str(args.out)
    if args.http:
        overrides = {"http.enabled": True, **overrides}
    if args.bundle:
        overrides["model.bundle"] = args.bundle
    if args.demo:
        if args.config:
            raise ConfigError("--demo and --config: use one of them")
        if args.http:
            overrides = {**DEMO_PAGE, **overrides}
        cfg = demo_config(args.out or "fastsam-edge-demo", **overrides)
    else:
        cfg = load_config(args.config or DEFAULT_CONFIG_PATH)
        if overrides:
            cfg = cfg.replace(**overrides)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames: expected a positive integer, got {args.max_frames}")
    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration: expected a positive number, got {args.duration}")

    from edge.service.runner import configure_logging, serve

    if getattr(args, "json", None) not in (None, "-"):
        from edge.cliargs import check_parent

        check_parent("--json", args.json)
    level = getattr(args, "log_level", None) or cfg.service.log_level
    configure_logging(level, debug=args.debug)
    import logging

    for line in start_warnings(cfg):
        logging.getLogger("edge.service").warning("%s", line)
    summary = serve(cfg, max_frames=args.max_frames, duration_s=args.duration)
    if getattr(args, "json", None) is not None:
        from dataclasses import asdict

        from edge.cliargs import emit_json

        emit_json("--json", args.json, asdict(summary))
        if args.json == "-":
            return _serve_exit_code(summary.reason)
    print(summary.line(), flush=True)
    if args.demo:
        print(f"results: {Path(cfg.output.dir).resolve()}")
    return _serve_exit_code(summary.reason)


def _serve_exit_code(reason: str) -> int:
    """130 after Ctrl-C (SIGINT), as the README's exit-code table says; 0 for every other end
    (SIGTERM is systemd's normal stop, a limit, the end of a replay)."""
    from edge.cliargs import EXIT_INTERRUPTED, EXIT_OK

    return EXIT_INTERRUPTED if reason == "SIGINT" else EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """``doctor``: preflight checks."""
    from edge.service.doctor import report, run_checks

    config = args.config
    if config is None:
        try:
            present = Path(DEFAULT_CONFIG_PATH).is_file()
        except PermissionError:  # there but unreadable: the config check says which group
            present = True
        config = DEFAULT_CONFIG_PATH if present else None
    if args.json not in (None, "-"):
        from edge.cliargs import check_parent

        check_parent("--json", args.json)
    checks = run_checks(config, user=args.user)
    if args.json is not None:
        import json

        from edge.cliargs import emit_json

        emit_json("--json", args.json, json.loads(report(checks, as_json=True)[0]))
        if args.json == "-":
            return report(checks)[1]
    text, code = report(checks)
    print(text)
    return code


def cmd_install_service(args: argparse.Namespace) -> int:
    """``install-service``: user, directories, config, unit (idempotent)."""
    from edge.service.install import Installer, default_venv

    root = Path(args.root)
    if root.resolve() == Path("/") and os.geteuid() != 0 and not args.dry_run:
        print(
            "fastsam-edge: error: install-service needs root (sudo), or use --root DIR / "
            "--dry-run",
            file=sys.stderr,
        )
        return 2
    if args.purge and not args.uninstall:
        raise ConfigError("--purge: only with --uninstall")
    inst = Installer(
        root=root,
        user=args.user,
        venv=args.venv or default_venv(),
        config_path=args.config,
        config_source=Path(args.config_source) if args.config_source else None,
        memory_max=args.memory_max,
        login_user=args.login_user,
        enable=not args.no_enable,
        start=args.start,
        dry_run=args.dry_run,
    )
    steps = inst.uninstall(purge=args.purge) if args.uninstall else inst.run()
    for step in steps:
        print(step.line())
    changed = sum(s.status in ("created", "updated", "removed", "done") for s in steps)
    failed = [s for s in steps if s.status in ("failed", "INVALID")]
    print(
        f"install-service: {changed} changed, {len(failed)} failed"
        + (" (dry run)" if args.dry_run else "")
    )
    if not failed and not args.uninstall and inst.system and not args.start:
        print("next: fastsam-edge doctor; then sudo systemctl start fastsam-edge")
    return 1 if failed else 0


def add_service_commands(sub: Any) -> None:
    """Add ``serve``, ``doctor`` and ``install-service`` to the ``fastsam-edge`` subparsers."""
    s = sub.add_parser(
        "serve",
        help="run the camera service (or the demo: serve --demo --max-frames 5)",
        description="Capture frames, segment them on triggers, write results; see "
        "docs/service.md.",
    )
    s.add_argument("--config", help=f"TOML config (default: {DEFAULT_CONFIG_PATH})")
    s.add_argument(
        "--demo",
        action="store_true",
        help="no config file: demo scenes, demo bundle, every frame segmented",
    )
    s.add_argument("--out", help="output directory (overrides output.dir)")
    s.add_argument(
        "--bundle",
        metavar="DIR|NAME",
        help='model bundle (overrides model.bundle): a directory, or an embedded demo: "demo" '
        '(FastSAM) or "demo-yoloe" (open vocabulary: labelled masks, words from the page); '
        "with --demo, the demo scenes on that bundle",
    )
    s.add_argument(
        "--http",
        action="store_true",
        help="serve the page and API (http.enabled; the URL is logged); with --demo the scenes "
        "loop, one segmented per second",
    )
    s.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    s.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    s.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set trigger.motion.enabled=true "
        "(TOML value; repeatable)",
    )
    add_json_option(s, "the closing summary")
    s.add_argument(
        "--print-config",
        action="store_true",
        help="print the example config (every key, its default) and exit",
    )
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser(
        "doctor", help="preflight checks (OS, camera, groups, numpy, bundle, disk, memory)"
    )
    d.add_argument("--config", help=f"config to check (default: {DEFAULT_CONFIG_PATH} if present)")
    d.add_argument("--user", default="fastsam-edge", help="service user to check too")
    add_json_option(d, "the checks")
    d.set_defaults(func=cmd_doctor)

    i = sub.add_parser("install-service", help="install the systemd service (idempotent)")
    i.add_argument("--root", default="/", help="install into this tree (tests, images)")
    i.add_argument("--user", default="fastsam-edge", help="service user (created if missing)")
    i.add_argument("--venv", help="venv with bin/fastsam-edge (default: this one)")
    i.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="config path in the unit")
    i.add_argument(
        "--config-source",
        help="initial config to install if none exists (default: the example config)",
    )
    i.add_argument(
        "--memory-max",
        default="auto",
        help="MemoryMax= of the unit, e.g. 1536M; auto (default): the configured bundle's "
        "measured peak memory (bundle.json) + 50 %% (at least +256 MiB), 1G without one",
    )
    i.add_argument(
        "--login-user",
        default=os.environ.get("SUDO_USER") or None,
        help="user who joins the service's group (reads config and results without sudo) and "
        "the journal group (default: $SUDO_USER)",
    )
    i.add_argument("--no-enable", action="store_true", help="do not enable at boot")
    i.add_argument("--start", action="store_true", help="start (or restart) the service")
    i.add_argument("--dry-run", action="store_true", help="show what would change")
    i.add_argument(
        "--uninstall",
        action="store_true",
        help="remove the unit and the service user (keeps config, models, results)",
    )
    i.add_argument(
        "--purge",
        action="store_true",
        help="with --uninstall: also remove /etc/fastsam-edge and /var/lib/fastsam-edge",
    )
    i.set_defaults(func=cmd_install_service)

    add_configure_command(sub)
