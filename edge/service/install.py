"""``fastsam-edge install-service``: user, directories, config, unit; idempotent.

Every step compares what is there with what should be there and only acts on a difference,
so a second run reports "unchanged" everywhere and touches nothing. The user's config is
never overwritten. ``--root DIR`` installs into a directory tree instead of ``/`` (tests,
image builders): system commands (``useradd``, ``chown``, ``systemctl``) are skipped there and
``enable`` is done by creating the ``multi-user.target.wants`` link, as ``systemctl enable``
would.

The unit template below is the single source of ``systemd/fastsam-edge.service`` (a test keeps
the committed file equal to :func:`render_unit` with the defaults).
"""

from __future__ import annotations

import grp
import json
import logging
import math
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge import __version__
from edge.errors import FastSAMEdgeError
from edge.service.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_OUTPUT_DIR,
    ConfigError,
    ServiceConfig,
    control_characters,
    load_config,
    render_example_config,
)

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = "fastsam-edge"
DEFAULT_USER = "fastsam-edge"
DEFAULT_VENV = "/opt/fastsam-edge/venv"
STATE_DIR = "/var/lib/fastsam-edge"
UNIT_PATH = "/etc/systemd/system/fastsam-edge.service"
WANTS_LINK = "/etc/systemd/system/multi-user.target.wants/fastsam-edge.service"
ENV_FILE = "/etc/default/fastsam-edge"
INSTALL_RECORD = f"{STATE_DIR}/install.json"
GROUPS = ("video", "gpio")
# Groups whose members read the system journal (journalctl -u fastsam-edge), in order of
# preference: systemd-journal is exactly that right; adm (Raspberry Pi OS's first user is in
# it) also reads /var/log.
JOURNAL_GROUPS = ("systemd-journal", "adm")
FALLBACK_MEMORY_MAX = "1G"
# MemoryMax= headroom over the bundle's measured peak: the service adds frames in flight, the
# overlay and JPEG, result encoding, the HTTP server and Python's allocator slack on top of
# one `segment` run.
MEMORY_HEADROOM = 1.5
MEMORY_HEADROOM_MIN_MIB = 256

UNIT_TEMPLATE = """\
# fastsam-edge: camera-triggered FastSAM segmentation (onnxruntime), see docs/service.md.
# Written by `fastsam-edge install-service`, which rewrites it: put local changes in a
# drop-in (`sudo systemctl edit fastsam-edge`).
[Unit]
Description=fastsam-edge camera-triggered segmentation (FastSAM, onnxruntime)
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
EnvironmentFile=-{env_file}
Environment=PYTHONUNBUFFERED=1
# READY=1 comes after the model is loaded and warmed up, and the camera opened (a Pi 4 with
# a CLIP bundle needs minutes for that, hence the long start timeout).
TimeoutStartSec=300
# SIGTERM lets the frame being segmented finish (at most service.stall_timeout_s = 120 s).
TimeoutStopSec=150
# WATCHDOG=1 comes from frame-loop progress while no segmentation is stalled (longer than
# service.stall_timeout_s), so a hung camera or model call ends in a restart.
WatchdogSec=60
Restart=on-failure
RestartSec=5
User={user}
Group={user}
SupplementaryGroups=video gpio
# /etc/fastsam-edge (config), /var/lib/fastsam-edge (models, results), /run/fastsam-edge
ConfigurationDirectory=fastsam-edge
ConfigurationDirectoryMode=0750
StateDirectory=fastsam-edge
StateDirectoryMode=0750
RuntimeDirectory=fastsam-edge
RuntimeDirectoryMode=0750
WorkingDirectory={state_dir}
# The output directory (output.dir): writable although ProtectSystem=strict.
ReadWritePaths={output_dir}
UMask=0027
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictNamespaces=yes
RemoveIPC=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# AF_NETLINK: libcamera enumerates devices through udev; AF_UNIX: sd_notify, the API socket.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# Deliberately no PrivateDevices=yes, DevicePolicy=closed or ProtectClock=yes (which adds a
# device allow-list on older systemd): the camera needs /dev/video*, /dev/media*,
# /dev/v4l-subdev* and /dev/dma_heap/*, GPIO needs /dev/gpiochip*.
MemoryMax={memory_max}
CPUQuota={cpu_quota}
Nice=5

[Install]
WantedBy=multi-user.target
"""

ENV_TEMPLATE = """\
# Environment of the fastsam-edge service (read by systemd; `KEY=value`, no quotes needed).
# onnxruntime threads: leave one core for the camera stack and sshd on a 4-core Pi.
OMP_NUM_THREADS=3
# gpiozero pin factory on a Pi 5 / Bookworm.
#GPIOZERO_PIN_FACTORY=lgpio
"""


def _refuse_controls(key: str, text: str) -> None:
    bad = control_characters(text)
    if bad:
        # a newline would end the setting's line and start a directive of its own
        raise ConfigError(
            f"{key}: control characters ({', '.join(bad)}) cannot be written into the systemd "
            f"unit, got {text!r}"
        )


def exec_word(text: str, key: str = "ExecStart", program: bool = False) -> str:
    """One word of an ``ExecStart=`` command line, as systemd reads it back: ``%`` doubled
    (specifiers), ``$`` doubled in arguments (variables; the program's path is not
    expanded), and in double quotes with ``\\`` and ``"`` escaped when it holds whitespace,
    a quote or a backslash.

    Raises:
        ConfigError: ``text`` holds control characters (named by ``key``).
    """
    _refuse_controls(key, text)
    text = text.replace("%", "%%")
    if not program:
        text = text.replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def unit_path(text: str, key: str, prefix: str = "") -> str:
    """A path of a path-list setting (``ReadWritePaths=``): ``%`` doubled, and in double quotes
    (``prefix`` such as ``-`` inside them) when it holds whitespace or a quote.

    Raises:
        ConfigError: Control characters, a double quote or a backslash (systemd keeps the
            escapes of these settings, so such a path cannot be written), named by ``key``.
    """
    _refuse_controls(key, text)
    if any(c in text for c in '"\\'):
        raise ConfigError(
            f"{key}: a path with a double quote or a backslash cannot be written into the "
            f"systemd unit, got {text!r}"
        )
    word = prefix + text.replace("%", "%%")
    return f'"{word}"' if any(c.isspace() or c == "'" for c in word) else word


def render_unit(
    venv: str = DEFAULT_VENV,
    config_path: str = DEFAULT_CONFIG_PATH,
    user: str = DEFAULT_USER,
    output_dir: str = DEFAULT_OUTPUT_DIR,
    memory_max: str = "1G",
    cpu_quota: str = "300%",
    exec_start: str | None = None,
) -> str:
    """The unit file text.

    Args:
        venv: Virtual environment holding ``bin/fastsam-edge``.
        config_path: Config file passed to ``serve --config``.
        user: Service user (and group).
        output_dir: ``output.dir`` of the config, made writable with ``ReadWritePaths=``.
        memory_max: ``MemoryMax=`` (model + onnxruntime arena + frame buffers; measure on the
            device).
        cpu_quota: ``CPUQuota=`` (300 % leaves a core of a 4-core Pi free).
        exec_start: Full ``ExecStart=`` command (overrides ``venv`` / ``config_path``).
    """
    if exec_start is None:
        exe = exec_word(f"{venv}/bin/fastsam-edge", "--venv", program=True)
        exec_start = f"{exe} serve --config {exec_word(config_path, '--config')}"
    _refuse_controls("ExecStart", exec_start)
    return UNIT_TEMPLATE.format(
        exec_start=exec_start,
        env_file=ENV_FILE,
        user=user,
        state_dir=STATE_DIR,
        output_dir=unit_path(output_dir, "output.dir", prefix="-"),
        memory_max=memory_max,
        cpu_quota=cpu_quota,
    )


def memory_max_for(peak_mib: float) -> str:
    """``MemoryMax=`` for a measured peak: +50 % (at least +256 MiB), in 64 MiB steps."""
    mib = max(peak_mib * MEMORY_HEADROOM, peak_mib + MEMORY_HEADROOM_MIN_MIB)
    return f"{math.ceil(mib / 64) * 64}M"


def parse_memory_size(text: str, total_bytes: int | None = None) -> int | None:
    """Bytes of a systemd memory value (``1G``, ``1536M``, ``80%``); None for ``infinity``.

    Raises:
        ValueError: Not a systemd memory size.
    """
    value = text.strip()
    if value in ("", "infinity"):
        return None
    if value.endswith("%"):
        if total_bytes is None:
            raise ValueError(f"{text!r}: a percentage needs the total memory")
        return int(float(value[:-1]) / 100 * total_bytes)
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number, unit = (value[:-1], value[-1].upper()) if value[-1].isalpha() else (value, "")
    if unit not in units:
        raise ValueError(f"{text!r}: unknown unit {unit!r}")
    return int(float(number) * units[unit])


@dataclass(frozen=True)
class BundleMemory:
    """What the configured bundle needs, from its ``bundle.json`` ``memory`` section.

    Attributes:
        bundle: Bundle directory.
        peak_mib: Measured peak for the configured precision (with text prompts when the
            bundle has CLIP); None when the bundle was exported without the measurement.
        what: Which figure it is, e.g. ``int8 + text prompt``.
    """

    bundle: str
    peak_mib: float | None
    what: str

    @property
    def memory_max(self) -> str | None:
        """The recommended ``MemoryMax=`` (None without a measurement)."""
        return memory_max_for(self.peak_mib) if self.peak_mib is not None else None


def bundle_memory(cfg: ServiceConfig) -> BundleMemory:
    """The measured peak memory of the configured bundle and precision.

    Raises:
        FastSAMEdgeError: The bundle is missing or its manifest is malformed.
    """
    from edge.bundle import read_manifest
    from edge.demo import resolve_bundle

    bundle = resolve_bundle(cfg.model.bundle)
    m = read_manifest(bundle)
    # a bench recommendation (model.defaults_from) may pick either precision at start
    precision = cfg.model.precision or (None if cfg.model.defaults_from else m.default_precision)
    what = (precision or "any precision") + (" + text prompt" if m.has_text else "")
    peak = m.memory.peak(precision, text=m.has_text) if m.memory is not None else None
    return BundleMemory(str(bundle), peak, what)


@dataclass
class Step:
    """One install action and what happened."""

    what: str
    status: str  # created, updated, unchanged, skipped, failed, would create, ...
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:>13}  {self.what}" + (f"  ({self.detail})" if self.detail else "")


@dataclass
class Installer:
    """The install plan; :meth:`run` executes it (or only reports, with ``dry_run``)."""

    root: Path = Path("/")
    user: str = DEFAULT_USER
    venv: str = DEFAULT_VENV
    config_path: str = DEFAULT_CONFIG_PATH
    config_source: Path | None = None
    memory_max: str = "auto"
    login_user: str | None = None
    enable: bool = True
    start: bool = False
    dry_run: bool = False
    run_command: Callable[[Sequence[str]], int] | None = None
    steps: list[Step] = field(default_factory=list)

    @property
    def system(self) -> bool:
        """Installing into the running system (not a ``--root`` tree)."""
        return self.root.resolve() == Path("/")

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def _run(self, cmd: Sequence[str]) -> int:
        if self.run_command is not None:
            return self.run_command(cmd)
        return subprocess.run(list(cmd), check=False).returncode

    def _step(self, what: str, status: str, detail: str = "") -> Step:
        if self.dry_run and status in ("created", "updated", "enabled", "started", "done"):
            status = f"would {'create' if status == 'created' else 'update'}"
        step = Step(what, status, detail)
        self.steps.append(step)
        return step

    # individual steps -------------------------------------------------------------------

    def ensure_user(self) -> None:
        if not self.system:
            self._step(f"user {self.user} (groups {', '.join(GROUPS)})", "skipped", "--root")
            return
        try:
            pw = pwd.getpwnam(self.user)
        except KeyError:
            pw = None
        existing = [g for g in GROUPS if _group_exists(g)]
        missing_groups = [g for g in GROUPS if g not in existing]
        if pw is None:
            cmd = [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                STATE_DIR,
                "--shell",
                "/usr/sbin/nologin",
            ]
            if existing:
                cmd += ["--groups", ",".join(existing)]
            cmd.append(self.user)
            if not self.dry_run and self._run(cmd) != 0:
                self._step(f"user {self.user}", "failed", " ".join(cmd))
                return
            self._step(f"user {self.user}", "created", f"groups: {', '.join(existing) or '-'}")
        else:
            lacking = [
                g
                for g in existing
                if self.user not in grp.getgrnam(g).gr_mem and grp.getgrnam(g).gr_gid != pw.pw_gid
            ]
            if lacking:
                cmd = ["usermod", "--append", "--groups", ",".join(lacking), self.user]
                if not self.dry_run and self._run(cmd) != 0:
                    self._step(f"user {self.user} groups", "failed", " ".join(cmd))
                else:
                    self._step(f"user {self.user} groups", "updated", f"+{', '.join(lacking)}")
            else:
                self._step(f"user {self.user}", "unchanged")
        if missing_groups:
            self._step(
                f"groups {', '.join(missing_groups)}",
                "skipped",
                "not on this system (no camera/GPIO stack installed?)",
            )

    def ensure_login_user(self) -> None:
        """Put the invoking user in the service's group (config, models, results readable
        without sudo) and in a journal group (``journalctl -u fastsam-edge``)."""
        who = self.login_user
        if not who or who == "root":
            return
        if not self.system:
            self._step(f"user {who} joins group {self.user}", "skipped", "--root")
            return
        try:
            pwd.getpwnam(who)
        except KeyError:
            self._step(f"user {who}", "failed", "no such user (--login-user)")
            return
        journal = next((g for g in JOURNAL_GROUPS if _group_exists(g)), None)
        wanted = [self.user] + ([journal] if journal else [])
        lacking = [g for g in wanted if _group_exists(g) and who not in grp.getgrnam(g).gr_mem]
        lacking = [g for g in lacking if grp.getgrnam(g).gr_gid != pwd.getpwnam(who).pw_gid]
        what = f"user {who} in groups {', '.join(wanted)}"
        if not lacking:
            self._step(what, "unchanged")
            return
        cmd = ["usermod", "--append", "--groups", ",".join(lacking), who]
        if not self.dry_run and self._run(cmd) != 0:
            self._step(what, "failed", " ".join(cmd))
            return
        self._step(what, "updated", f"+{', '.join(lacking)}; takes effect at the next login")

    def ensure_dir(self, path: str, mode: int, owned: bool) -> None:
        target = self._p(path)
        if target.is_dir():
            status = "unchanged"
            if (target.stat().st_mode & 0o7777) != mode:
                if not self.dry_run:
                    os.chmod(target, mode)
                status = "updated"
        else:
            if not self.dry_run:
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target, mode)
            status = "created"
        if owned and self.system and not self.dry_run:
            self._chown(target, self.user, self.user)
        self._step(f"directory {path} ({mode:04o})", status)

    def _chown(self, path: Path, user: str, group: str) -> None:
        try:
            uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
        except KeyError:
            return
        st = path.stat()
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(path, uid, gid)

    def ensure_file(
        self, path: str, text: str, mode: int, overwrite: bool, group: str | None = None
    ) -> str:
        """Write ``text`` unless identical (or present and not ``overwrite``)."""
        target = self._p(path)
        data = text.encode("utf-8")
        if target.is_file():
            if not overwrite:
                self._step(f"file {path}", "unchanged", "kept: existing file is never replaced")
                return "unchanged"
            if target.read_bytes() == data and (target.stat().st_mode & 0o7777) == mode:
                self._step(f"file {path}", "unchanged")
                return "unchanged"
            status = "updated"
        else:
            status = "created"
        if not self.dry_run:
            from edge.io import atomic_write_bytes

            atomic_write_bytes(target, data)
            os.chmod(target, mode)
            if group and self.system:
                self._chown(target, "root", group)
        self._step(f"file {path}", status)
        return status

    def ensure_link(self, link: str, target: str) -> bool:
        path = self._p(link)
        if path.is_symlink() and os.readlink(path) == target:
            self._step(f"enable {link} -> {target}", "unchanged")
            return False
        if not self.dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()
            os.symlink(target, path)
        self._step(f"enable {link} -> {target}", "created")
        return True

    # the whole plan ---------------------------------------------------------------------

    def run(self) -> list[Step]:
        """Install; returns the steps (see :meth:`Step.line`)."""
        self.steps = []
        self.ensure_user()
        self.ensure_login_user()
        self.ensure_dir("/etc/fastsam-edge", 0o750, owned=False)
        if self.system and not self.dry_run:
            self._chown(self._p("/etc/fastsam-edge"), "root", self.user)
        self.ensure_dir(STATE_DIR, 0o750, owned=True)
        self.ensure_dir(f"{STATE_DIR}/models", 0o750, owned=True)
        self.ensure_dir(f"{STATE_DIR}/results", 0o750, owned=True)
        example = (
            self.config_source.read_text(encoding="utf-8")
            if self.config_source is not None
            else render_example_config()
        )
        self.ensure_file(self.config_path, example, 0o640, overwrite=False, group=self.user)
        if self.system and not self.dry_run and self._p(self.config_path).is_file():
            # a config written before the group existed (fastsam-edge configure) joins it
            self._chown(self._p(self.config_path), "root", self.user)
        output_dir = DEFAULT_OUTPUT_DIR
        cfg: ServiceConfig | None = None
        try:
            cfg = load_config(self._p(self.config_path))
            output_dir = cfg.output.dir
            self._step(f"config {self.config_path}", "valid")
        except ConfigError as exc:
            if not self.dry_run:
                self._step(f"config {self.config_path}", "INVALID", str(exc))
        if output_dir != DEFAULT_OUTPUT_DIR and not output_dir.startswith(STATE_DIR + "/"):
            self.ensure_dir(output_dir, 0o750, owned=True)
        self.ensure_file(ENV_FILE, ENV_TEMPLATE, 0o644, overwrite=False)
        memory_max = self._memory_max(cfg)
        unit = render_unit(self.venv, self.config_path, self.user, output_dir, memory_max)
        unit_status = self.ensure_file(UNIT_PATH, unit, 0o644, overwrite=True)
        record = {
            "version": __version__,
            "venv": self.venv,
            "config": self.config_path,
            "memory_max": memory_max,
            "bundle": _bundle_record(cfg),
        }
        self.ensure_file(
            INSTALL_RECORD, json.dumps(record, indent=2) + "\n", 0o644, overwrite=True
        )
        if self.system and unit_status != "unchanged":
            self._systemctl(["daemon-reload"], "systemd daemon-reload")
        if self.enable:
            self.ensure_link(WANTS_LINK, UNIT_PATH)
        if self.start:
            if not self.system:
                self._step("start fastsam-edge", "skipped", "--root")
            else:
                verb = "restart" if unit_status == "updated" else "start"
                self._systemctl([verb, SERVICE_NAME], f"systemctl {verb} {SERVICE_NAME}")
        return self.steps

    def _memory_max(self, cfg: ServiceConfig | None) -> str:
        """``--memory-max``, or with ``auto`` the bundle's measured peak plus headroom."""
        if self.memory_max != "auto":
            return self.memory_max
        what = f"MemoryMax={FALLBACK_MEMORY_MAX}"
        if cfg is None:
            self._step(what, "default", "config invalid")
            return FALLBACK_MEMORY_MAX
        try:
            need = bundle_memory(cfg)
        except FastSAMEdgeError as exc:
            self._step(what, "default", f"bundle unreadable: {exc}")
            return FALLBACK_MEMORY_MAX
        if need.memory_max is None:
            self._step(
                what,
                "default",
                f"{need.bundle} has no measured peak memory (re-export it with fastsam-export, "
                "or pass --memory-max)",
            )
            return FALLBACK_MEMORY_MAX
        detail = f"measured peak {need.peak_mib:.0f} MiB ({need.what})"
        self._step(f"MemoryMax={need.memory_max}", "from bundle", detail)
        return need.memory_max

    def _systemctl(self, args: list[str], what: str) -> None:
        if shutil.which("systemctl") is None:
            self._step(what, "skipped", "no systemctl")
            return
        if not Path("/run/systemd/system").is_dir():  # a chroot or an image being built
            self._step(what, "skipped", "systemd is not running")
            return
        if self.dry_run:
            self._step(what, "would run")
            return
        rc = self._run(["systemctl", *args])
        self._step(what, "done" if rc == 0 else "failed", f"exit {rc}" if rc else "")

    def uninstall(self, purge: bool = False) -> list[Step]:
        """Remove the unit, its enable link, the install record and the service user.

        Args:
            purge: Also remove the config (``/etc/fastsam-edge``, ``/etc/default/fastsam-edge``)
                and the state directory (models, results).
        """
        self.steps = []
        if self.system:
            self._systemctl(
                ["disable", "--now", SERVICE_NAME], f"systemctl disable --now {SERVICE_NAME}"
            )
        paths = [WANTS_LINK, UNIT_PATH, INSTALL_RECORD]
        if purge:
            paths += ["/etc/fastsam-edge", ENV_FILE, STATE_DIR]
        for path in paths:
            p = self._p(path)
            if p.is_symlink() or p.exists():
                if not self.dry_run:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                self._step(f"remove {path}", "would remove" if self.dry_run else "removed")
            else:
                self._step(f"remove {path}", "unchanged", "absent")
        if self.system:
            self._systemctl(["daemon-reload"], "systemd daemon-reload")
            self._remove_user()
        else:
            self._step(f"user {self.user}", "skipped", "--root")
        if not purge:
            self._step(
                f"/etc/fastsam-edge, {STATE_DIR} (config, models, results)",
                "kept",
                "--purge removes them",
            )
        return self.steps

    def _remove_user(self) -> None:
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            self._step(f"remove user {self.user}", "unchanged", "absent")
            return
        cmd = ["userdel", self.user]
        if self.dry_run:
            self._step(f"remove user {self.user}", "would remove")
            return
        rc = self._run(cmd)
        self._step(
            f"remove user {self.user}",
            "removed" if rc == 0 else "failed",
            f"exit {rc}" if rc else "",
        )
        if rc == 0 and _group_exists(self.user):  # --user-group made it; userdel may leave it
            self._run(["groupdel", self.user])


def _bundle_record(cfg: ServiceConfig | None) -> dict[str, str] | None:
    """Name, directory and detector checksum of the configured bundle (for drift checks)."""
    if cfg is None:
        return None
    from edge.bundle import read_manifest

    try:
        need = bundle_memory(cfg)
        m = read_manifest(need.bundle)
        precision = cfg.model.precision or m.default_precision
        return {
            "path": cfg.model.bundle,
            "name": m.name,
            "precision": precision,
            "sha256": m.files[m.detector_file(precision)].sha256,
        }
    except (FastSAMEdgeError, KeyError):
        return None


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def default_venv() -> str:
    """The running interpreter's environment (``sys.prefix``)."""
    return sys.prefix
