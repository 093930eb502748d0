"""``fastsam-edge doctor``: preflight checks with clear answers and fixes.

Each check returns OK, WARN or FAIL with one line of explanation and, when not OK, a fix.
Checks that could hang or crash (importing picamera2 against a mismatched numpy, probing the
camera) run in a subprocess with a timeout.
"""

from __future__ import annotations

import grp
import importlib.util
import json
import os
import platform
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.cpu import Int8Class
from edge.demo import is_demo_name, resolve_bundle
from edge.service.config import ConfigError, ServiceConfig, load_config

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Check:
    """One answer."""

    name: str
    status: str
    message: str
    fix: str = ""

    def lines(self) -> list[str]:
        out = [f"{self.status:<4}  {self.name}: {self.message}"]
        if self.fix and self.status != OK:
            out.append(f"      fix: {self.fix}")
        return out


@dataclass
class Probe:
    """The facts the checks read, injectable for tests."""

    machine: str = field(default_factory=platform.machine)
    pointer_bits: int = struct.calcsize("P") * 8
    root: Path = Path("/")
    run: Callable[[list[str], float], tuple[int, str]] | None = None
    python: str = sys.executable
    health: Callable[[ServiceConfig], dict[str, Any] | None] | None = None

    def service_health(self, cfg: ServiceConfig) -> dict[str, Any] | None:
        """The running service's ``GET /healthz`` body (None when it does not answer)."""
        if self.health is not None:
            return self.health(cfg)
        return _fetch_health(cfg)

    def meminfo(self) -> dict[str, int]:
        """``/proc/meminfo`` in bytes (empty when unreadable)."""
        out = {}
        try:
            for line in (self.root / "proc/meminfo").read_text().splitlines():
                k, _, v = line.partition(":")
                out[k] = int(v.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            return {}
        return out

    def run_python(self, code: str, timeout: float = 30.0) -> tuple[int, str]:
        """Run ``python -c code`` in a subprocess; (exit code, stdout+stderr)."""
        cmd = [self.python, "-c", code]
        if self.run is not None:
            return self.run(cmd, timeout)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout:g} s"
        return proc.returncode, (proc.stdout + proc.stderr).strip()


def check_os(probe: Probe) -> Check:
    m = probe.machine.lower()
    if m in ("armv7l", "armv6l", "armhf", "arm") or probe.pointer_bits == 32:
        return Check(
            "64-bit OS",
            FAIL,
            f"{probe.machine}, {probe.pointer_bits}-bit Python: onnxruntime "
            "publishes no 32-bit ARM wheels",
            "install Raspberry Pi OS (64-bit) (Pi 3, 4, 5, Zero 2 W)",
        )
    return Check("64-bit OS", OK, f"{probe.machine}, {probe.pointer_bits}-bit Python")


def check_python() -> Check:
    v = sys.version_info
    if v < (3, 11):
        return Check(
            "python",
            FAIL,
            f"{platform.python_version()} (needs >= 3.11 for tomllib)",
            "use Raspberry Pi OS Bookworm (Python 3.11) or newer",
        )
    return Check("python", OK, f"{platform.python_version()} at {sys.executable}")


def check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except Exception as exc:
        return Check(
            "onnxruntime",
            FAIL,
            f"cannot import: {exc}",
            "pip install onnxruntime (64-bit OS needed)",
        )
    return Check(
        "onnxruntime",
        OK,
        f"{ort.__version__}, providers {', '.join(ort.get_available_providers())}",
    )


def _system_numpy(root: Path) -> str | None:
    for base in ("usr/lib/python3/dist-packages",):
        d = root / base
        if not d.is_dir():
            continue
        for info in sorted(d.glob("numpy-*.egg-info")) + sorted(d.glob("numpy-*.dist-info")):
            return info.name.split("-")[1].removesuffix(".egg").removesuffix(".dist")
        version = d / "numpy" / "version.py"
        if version.is_file():
            for line in version.read_text(errors="replace").splitlines():
                if line.startswith(("version =", "__version__ =")):
                    return line.split("=", 1)[1].strip().strip("'\"")
    return None


def check_numpy_abi(probe: Probe, needs_camera: bool) -> Check:
    import numpy

    ours = numpy.__version__
    system = _system_numpy(probe.root)
    has_picamera2 = importlib.util.find_spec("picamera2") is not None
    if not has_picamera2:
        status = FAIL if needs_camera else OK
        msg = f"numpy {ours}; picamera2 not importable" + (
            "" if needs_camera else " (not needed: source.kind is not picamera2)"
        )
        return Check(
            "numpy / picamera2",
            status,
            msg,
            "sudo apt install python3-picamera2, and create the venv with "
            "--system-site-packages (scripts/install_pi.sh does both)",
        )
    rc, out = probe.run_python("import simplejpeg, picamera2; print('ok')", 60.0)
    if rc != 0:
        abi = "dtype size changed" in out or "binary incompatibility" in out
        why = "numpy ABI mismatch" if abi else "import failed"
        return Check(
            "numpy / picamera2",
            FAIL,
            f"{why}: venv numpy {ours}, apt numpy {system or '?'}: {out.splitlines()[-1:]}",
            f"pin numpy to the system version: pip install 'numpy=={system}' "
            "'opencv-python-headless<4.12' (scripts/install_pi.sh does this)"
            if system
            else "reinstall with scripts/install_pi.sh",
        )
    if system and system != ours:
        return Check(
            "numpy / picamera2",
            WARN,
            f"picamera2 imports, but the venv's numpy {ours} shadows apt's {system}",
            f"pip install 'numpy=={system}' to match apt's picamera2 stack",
        )
    return Check("numpy / picamera2", OK, f"numpy {ours}; picamera2 and simplejpeg import")


def check_camera(cfg: ServiceConfig, probe: Probe) -> Check:
    kind = cfg.source.kind
    if kind in ("replay", "demo"):
        where = cfg.source.path if kind == "replay" else "generated scenes"
        if kind == "replay" and not Path(cfg.source.path).exists():
            return Check(
                "camera",
                FAIL,
                f"replay source {cfg.source.path!r} does not exist",
                "fix source.path",
            )
        return Check("camera", OK, f"source.kind = {kind!r} ({where}): no camera needed")
    if kind == "stream":
        from edge.service.config import ConfigError, read_secret_file, redact_url

        if cfg.source.credentials_file:
            try:
                read_secret_file("source.credentials_file", cfg.source.credentials_file)
            except ConfigError as exc:
                return Check("camera", FAIL, str(exc), "fix source.credentials_file")
        return Check(
            "camera",
            OK,
            f"source.kind = 'stream' ({redact_url(cfg.source.url)}): no local camera; the "
            "service says 'stream down' in /healthz while it cannot read it",
        )
    holders = _device_holders(probe.root)
    if kind == "picamera2":
        if importlib.util.find_spec("picamera2") is None:
            return Check(
                "camera", FAIL, "picamera2 is not installed", "sudo apt install python3-picamera2"
            )
        rc, out = probe.run_python(
            "from picamera2 import Picamera2; import json; "
            "print(json.dumps([{k: str(v) for k, v in c.items()} "
            "for c in Picamera2.global_camera_info()]))",
            60.0,
        )
        if rc != 0:
            return Check(
                "camera",
                FAIL,
                f"camera probe failed: {out.splitlines()[-1:]}",
                "see the numpy / picamera2 check",
            )
        try:
            cams = json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            cams = []
        if not cams:
            return Check(
                "camera",
                FAIL,
                "no camera detected by libcamera",
                "check the ribbon cable and `rpicam-hello --list-cameras`",
            )
        if cfg.source.camera >= len(cams):
            return Check(
                "camera",
                FAIL,
                f"source.camera = {cfg.source.camera} but only {len(cams)} camera(s) found",
                "fix source.camera",
            )
        cam = cams[cfg.source.camera]
        msg = f"{cam.get('Model', '?')} (camera {cfg.source.camera} of {len(cams)})"
    else:
        dev = cfg.source.device
        path = f"/dev/video{dev}" if dev.isdigit() else dev
        if not (probe.root / path.lstrip("/")).exists():
            return Check(
                "camera",
                FAIL,
                f"{path} does not exist",
                "plug the camera in; list devices with `v4l2-ctl --list-devices`",
            )
        msg = f"{path} present"
    if holders:
        return Check(
            "camera",
            WARN,
            f"{msg}; in use by {', '.join(holders)}",
            "only one process can own the camera: stop the other one (or the "
            "service: sudo systemctl stop fastsam-edge) before testing",
        )
    return Check("camera", OK, f"{msg}; free")


def _device_holders(root: Path) -> list[str]:
    """Processes (that we may inspect) holding /dev/video*, /dev/media* open."""
    holders = []
    proc = root / "proc"
    if not proc.is_dir():
        return holders
    me = os.getpid()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith(("/dev/video", "/dev/media")):
                    comm = (pid_dir / "comm").read_text().strip()
                    holders.append(f"{comm} (pid {pid_dir.name})")
                    break
        except OSError:
            continue
    return holders


def check_groups(user: str | None) -> list[Check]:
    out = []
    names = {os.getuid(): pwd.getpwuid(os.getuid()).pw_name}
    if user:
        try:
            names[pwd.getpwnam(user).pw_uid] = user
        except KeyError:
            out.append(
                Check(f"user {user}", WARN, "does not exist", "sudo fastsam-edge install-service")
            )
    for uid, name in names.items():
        if uid == 0:
            continue
        pw = pwd.getpwnam(name)
        member = {g.gr_name for g in grp.getgrall() if name in g.gr_mem}
        member.add(grp.getgrgid(pw.pw_gid).gr_name)
        lacking = [g for g in ("video", "gpio") if g not in member and _exists(g)]
        absent = [g for g in ("video", "gpio") if not _exists(g)]
        service = name == user
        if not service and user and _exists(user):
            # the login user reads the service's config and results through its group
            if user not in member:
                out.append(
                    Check(
                        f"groups of {name}",
                        WARN,
                        f"not in {user}: the config and results are not readable without sudo",
                        f"sudo usermod -aG {user} {name} (then log in again)",
                    )
                )
            elif grp.getgrnam(user).gr_gid not in os.getgroups():
                out.append(
                    Check(
                        f"groups of {name}",
                        WARN,
                        f"in {user} since the last login only",
                        "log out and in again (or run `newgrp fastsam-edge`)",
                    )
                )
        if lacking:
            out.append(
                Check(
                    f"groups of {name}",
                    FAIL if "video" in lacking and service else WARN,
                    f"not in {', '.join(lacking)} (camera: video, GPIO: gpio)"
                    + (
                        ""
                        if service
                        else f"; needed only to use the camera yourself ({user} runs the service)"
                        if user
                        else ""
                    ),
                    f"sudo usermod -aG {','.join(lacking)} {name} (then log in again)",
                )
            )
        else:
            extra = f"; groups {', '.join(absent)} do not exist here" if absent else ""
            out.append(Check(f"groups of {name}", OK, f"member of video/gpio as needed{extra}"))
    return out


def _exists(group: str) -> bool:
    try:
        grp.getgrnam(group)
        return True
    except KeyError:
        return False


def check_bundle(cfg: ServiceConfig) -> tuple[Check, int]:
    from edge.bundle import read_manifest, verify_file
    from edge.errors import FastSAMEdgeError

    bundle = cfg.model.bundle
    try:
        path = resolve_bundle(bundle)
        m = read_manifest(path)
        precision = cfg.model.precision or m.default_precision
        name = m.detector_file(precision)
        verify_file(path, m, name)
    except FastSAMEdgeError as exc:
        return Check(
            "bundle", FAIL, str(exc), "export one with fastsam-export and set model.bundle"
        ), 0
    size = m.files[name].bytes
    if cfg.processing.vocabulary and m.yoloe is None:
        return Check(
            "bundle",
            FAIL,
            f"processing.vocabulary: {m.name} is a FastSAM bundle (class-agnostic: masks have "
            "no names); the service would not start",
            "remove processing.vocabulary, or set model.bundle to a YOLOE bundle",
        ), size
    demo = is_demo_name(bundle)
    note = " (demo bundle: it only segments the synthetic demo scenes)" if demo else ""
    if m.yoloe is not None:
        words = cfg.processing.vocabulary or list(m.yoloe.vocabulary)
        note += f"; YOLOE-{m.yoloe.family}, vocabulary: {', '.join(words) or '(none)'}"
    h, w = m.input.imgsz
    return Check(
        "bundle",
        OK,
        f"{m.name}, {precision}, input {w}x{h}, {size / 2**20:.0f} MiB, checksum ok{note}",
    ), size


def check_int8_cpu(precision: str | None, cls: Int8Class | None = None) -> Check:
    """This CPU's integer-kernel class (:mod:`edge.cpu`) against the configured precision.

    Args:
        precision: ``model.precision`` (``None``: the bundle's default).
        cls: The class (default: probe this CPU).
    """
    from edge.cpu import int8_class

    cls = cls or int8_class()
    if precision == "int8" and not cls.int8_pays_off:
        return Check(
            "int8 on this CPU", WARN, cls.describe(),
            'measure with fastsam-edge bench --precision fp32,int8; set model.precision = '
            '"fp32" if int8 is not faster',
        )  # fmt: skip
    if precision == "int8" and cls.saturates:
        return Check(
            "int8 on this CPU", WARN, cls.describe(),
            "int8 masks here differ from fp32 more than on a Pi; prefer fp32 on this host",
        )  # fmt: skip
    return Check("int8 on this CPU", OK, cls.describe())


def check_memory(
    cfg: ServiceConfig, model_bytes: int, probe: Probe, measured_mib: float | None = None
) -> Check:
    meminfo = probe.meminfo()
    if not meminfo:
        return Check("memory", WARN, "cannot read /proc/meminfo")
    total, avail = meminfo.get("MemTotal", 0), meminfo.get("MemAvailable", 0)
    if measured_mib is not None:
        need = int(measured_mib * 2**20)
        msg = (
            f"{avail / 2**20:.0f} MiB available of {total / 2**20:.0f} MiB; the bundle's "
            f"measured peak is {measured_mib:.0f} MiB"
        )
        if need > avail:
            return Check(
                "memory",
                WARN if need <= total else FAIL,
                msg,
                'stop other programs, or use a smaller bundle (int8: model.precision = "int8")',
            )
        return Check("memory", OK, msg)
    side = cfg.processing.max_mask_side or max(cfg.source.width, cfg.source.height)
    aspect = min(cfg.source.width, cfg.source.height) / max(cfg.source.width, cfg.source.height)
    frame_px = side * side * aspect
    masks = cfg.processing.max_masks or 300
    # model weights + onnxruntime arena (~3x the weights), frames (a few BGR copies), and a
    # worst case of every mask covering a quarter of the frame as bit-packed crops (1/8 byte
    # per pixel), plus a few bool crops being assembled or drawn at a time.
    need = int(
        model_bytes * 4 + frame_px * 3 * 6 + masks * frame_px / 32 + frame_px * 4 + 150 * 2**20
    )
    msg = (
        f"{avail / 2**20:.0f} MiB available of {total / 2**20:.0f} MiB; estimated need "
        f"{need / 2**20:.0f} MiB (model, frames, {masks} masks at <= {side} px)"
    )
    if need > avail:
        return Check(
            "memory",
            FAIL,
            msg,
            "lower processing.max_mask_side / max_masks, or use a smaller (int8) bundle",
        )
    if need > 0.7 * avail:
        return Check("memory", WARN, msg, "little headroom: lower processing.max_masks")
    return Check("memory", OK, msg)


def unit_setting(root: Path, key: str) -> tuple[str | None, str]:
    """The effective ``key=`` of the installed unit (drop-ins override it) and where it is set.

    Returns:
        ``(value, file)``; ``(None, "")`` when the unit is not installed or does not set it.
    """
    from edge.service.install import UNIT_PATH

    unit = root / UNIT_PATH.lstrip("/")
    files = [unit] + sorted(unit.parent.glob(unit.name + ".d/*.conf"))
    value, where = None, ""
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            k, sep, v = line.strip().partition("=")
            if sep and k.strip() == key:
                value, where = v.strip(), "/" + str(path.relative_to(root))
    return value, where


def check_memory_limit(cfg: ServiceConfig, probe: Probe) -> tuple[Check, float | None]:
    """The unit's ``MemoryMax=`` and the board's RAM against the bundle's measured peak.

    Returns:
        The check and the measured peak in MiB (None without a measurement).
    """
    from edge.errors import FastSAMEdgeError
    from edge.service.install import bundle_memory, parse_memory_size

    name = "memory limit"
    try:
        need = bundle_memory(cfg)
    except FastSAMEdgeError:
        return Check(name, WARN, "bundle unreadable (see the bundle check)"), None
    if need.peak_mib is None or need.memory_max is None:
        return Check(
            name,
            WARN,
            f"{need.bundle}: bundle.json has no measured peak memory, so MemoryMax= is a guess",
            "re-export the bundle with a current fastsam-export (it measures the peak per "
            "precision), then sudo fastsam-edge install-service",
        ), None
    peak, recommended = need.peak_mib, need.memory_max
    total = probe.meminfo().get("MemTotal", 0)
    facts = f"bundle peak {peak:.0f} MiB ({need.what})"
    alternatives = _smaller_options(need.bundle, peak)
    if total and peak * 2**20 > total:
        return Check(
            name,
            FAIL,
            f"{facts}, but the board has {total / 2**20:.0f} MiB of RAM",
            alternatives or "use a board with more RAM, or export a smaller bundle",
        ), peak
    value, where = unit_setting(probe.root, "MemoryMax")
    if value is None:
        return Check(name, OK, f"{facts}; RAM {total / 2**20:.0f} MiB; no unit installed"), peak
    try:
        limit = parse_memory_size(value, total or None)
    except ValueError:
        return Check(name, WARN, f"MemoryMax={value} in {where}: cannot read it"), peak
    fix = (
        f"sudo fastsam-edge install-service (sets MemoryMax={recommended} from the bundle), or "
        f"sudo systemctl edit fastsam-edge with [Service] MemoryMax={recommended}"
    )
    limit_text = f"MemoryMax={value} ({where})"
    if limit is not None and limit < peak * 2**20:
        return Check(
            name,
            FAIL,
            f"{limit_text} is below the {facts}: the kernel would kill the service"
            + (" at the first text prompt" if "text" in need.what else ""),
            fix + (f"; or {alternatives}" if alternatives else ""),
        ), peak
    rec_bytes = parse_memory_size(recommended) or 0
    if limit is not None and limit < rec_bytes:
        return Check(
            name,
            WARN,
            f"{limit_text} leaves little headroom over the {facts} (recommended {recommended})",
            fix,
        ), peak
    if total and rec_bytes > 0.9 * total:
        return Check(
            name,
            WARN,
            f"{limit_text}; {facts}: with headroom that is most of the board's "
            f"{total / 2**20:.0f} MiB of RAM",
            alternatives or "keep other programs small",
        ), peak
    return Check(name, OK, f"{limit_text}; {facts}; RAM {total / 2**20:.0f} MiB"), peak


def _smaller_options(bundle: str, peak: float) -> str:
    """Settings of the same bundle whose measured peak is lower, as advice text."""
    from edge.bundle import read_manifest

    m = read_manifest(bundle)
    if m.memory is None:
        return ""
    options = []
    for precision, row in sorted(m.memory.peak_mib.items()):
        for kind, mib in sorted(row.items()):
            if mib < peak * 0.9:
                what = f'model.precision = "{precision}"' + (
                    " with text prompts" if kind == "text" else " without text prompts"
                )
                options.append((mib, f"{what} needs {mib:.0f} MiB"))
    return "; ".join(text for _, text in sorted(options, reverse=True)[:2])


def _fetch_health(cfg: ServiceConfig) -> dict[str, Any] | None:
    if not cfg.http.enabled or not cfg.http.port:
        return None
    import urllib.error
    import urllib.request

    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(cfg.http.host, cfg.http.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{cfg.http.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:  # 503 still carries the body
        body = exc.read()
    except (OSError, ValueError):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def check_drift(cfg: ServiceConfig, config_path: str | None, probe: Probe) -> list[Check]:
    """Version, bundle and config drift between this install, the config and the service."""
    from edge import __version__
    from edge.bundle import read_manifest
    from edge.errors import FastSAMEdgeError
    from edge.service.install import INSTALL_RECORD, STATE_DIR, bundle_memory

    out = []
    rerun = "re-run sudo scripts/install_pi.sh (or sudo fastsam-edge install-service)"
    restart = "sudo systemctl restart fastsam-edge"
    record: dict[str, Any] | None = None
    try:
        record = json.loads((probe.root / INSTALL_RECORD.lstrip("/")).read_text())
    except FileNotFoundError:
        record = None
    except (OSError, ValueError) as exc:
        out.append(Check("install record", WARN, f"cannot read {INSTALL_RECORD}: {exc}"))
    try:
        current = bundle_memory(cfg).bundle
        m = read_manifest(current)
        precision = cfg.model.precision or m.default_precision
        sha = m.files[m.detector_file(precision)].sha256
    except (FastSAMEdgeError, KeyError):
        m, sha = None, ""
    if isinstance(record, dict):
        problems = []
        if record.get("version") != __version__:
            problems.append(f"installed as version {record.get('version')}, this is {__version__}")
        rb = record.get("bundle") or {}
        if m is not None and rb and (rb.get("sha256"), rb.get("path")) != (sha, cfg.model.bundle):
            problems.append(
                f"the unit was set up for bundle {rb.get('name')} ({str(rb.get('sha256'))[:12]}), "
                f"the config now uses {m.name} ({sha[:12]}): MemoryMax= may not fit it"
            )
        if problems:
            out.append(Check("install drift", WARN, "; ".join(problems), rerun))
        else:
            out.append(Check("install drift", OK, f"version {__version__}, bundle as installed"))
    rw, _ = unit_setting(probe.root, "ReadWritePaths")
    if rw is not None:
        writable = [w.lstrip("-") for w in rw.split()]
        out_dir = cfg.output.dir.rstrip("/")
        if not out_dir.startswith(STATE_DIR + "/") and out_dir not in writable:
            out.append(
                Check(
                    "unit vs config",
                    FAIL,
                    f"output.dir {cfg.output.dir!r} is not writable under the unit "
                    f"(ReadWritePaths={rw}): the service cannot write results",
                    rerun,
                )
            )
    health = probe.service_health(cfg)
    if health is not None:
        problems = []
        if health.get("version") not in (None, __version__):
            problems.append(
                f"the service runs version {health.get('version')}, installed is {__version__}"
            )
        running = (health.get("bundle") or {}).get("sha256")
        if sha and running and running != sha:
            problems.append(
                f"the service runs bundle {(health.get('bundle') or {}).get('name')} "
                f"({running[:12]}), the config says {m.name if m else '?'} ({sha[:12]})"
            )
        uptime = health.get("uptime_s")
        if config_path and isinstance(uptime, int | float):
            try:
                age = time.time() - Path(config_path).stat().st_mtime
            except OSError:
                age = None
            if age is not None and age < uptime:
                problems.append(f"{config_path} changed after the service started")
        if problems:
            out.append(Check("running service", WARN, "; ".join(problems), restart))
        else:
            out.append(
                Check("running service", OK, f"version {__version__}, config and bundle current")
            )
    return out


def check_text_support(cfg: ServiceConfig) -> Check | None:
    """Text prompts: whether the bundle has CLIP and the tokenizer packages are installed."""
    from edge.bundle import NO_CLIP_HINT, read_manifest
    from edge.errors import FastSAMEdgeError
    from edge.service.install import bundle_memory
    from edge.tokenizer import missing_text_deps

    try:
        m = read_manifest(bundle_memory(cfg).bundle)
    except FastSAMEdgeError:
        return None
    if not m.has_text:
        return Check("text prompts", OK, f"not needed: {NO_CLIP_HINT}")
    missing = missing_text_deps()
    if missing:
        return Check(
            "text prompts",
            WARN,
            f"the bundle has CLIP, but {', '.join(missing)} (the text extra) is not installed: "
            "text prompts fail",
            'sudo scripts/install_pi.sh --text (or pip install "fastsam-edge[text]" in the venv)',
        )
    return Check("text prompts", OK, "bundle has CLIP; tokenizer packages installed")


def check_disk(cfg: ServiceConfig) -> Check:
    out = Path(cfg.output.dir)
    probe_dir = out
    while not _present(probe_dir) and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        usage = shutil.disk_usage(probe_dir)
    except OSError as exc:
        return Check("disk", FAIL, f"cannot stat {probe_dir}: {exc}", "fix output.dir")
    free_mb = usage.free / 2**20
    need_mb = cfg.output.min_free_mb + (cfg.output.max_mb or 0)
    msg = (
        f"{free_mb:.0f} MiB free at {probe_dir} (min_free_mb {cfg.output.min_free_mb:g}, "
        f"retention max_mb {cfg.output.max_mb:g})"
    )
    writable = os.access(probe_dir, os.W_OK)
    if free_mb < cfg.output.min_free_mb:
        return Check(
            "disk",
            FAIL,
            msg + ": results would not be written",
            "free space or lower output.min_free_mb",
        )
    if cfg.output.max_mb and free_mb < need_mb:
        return Check(
            "disk", WARN, msg + ": retention allows more than fits", "lower output.max_mb"
        )
    owner = _owner(out)
    if not writable and owner not in (None, "root") and owner != _me():
        # the service user's directory: readable through its group, written by the service
        return Check("disk", OK, msg + f"; written by {owner}")
    if not writable and _present(out):
        return Check(
            "disk",
            WARN,
            msg + f"; {out} is not writable by this user",
            "the service user owns it after install-service (run doctor as it: sudo "
            "-u fastsam-edge fastsam-edge doctor)",
        )
    return Check("disk", OK, msg)


def _owner(path: Path) -> str | None:
    """User name owning ``path`` (None when it cannot be read)."""
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (OSError, KeyError):
        return None


def _me() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _present(path: Path) -> bool:
    """``path.exists()``, False where a parent directory is not searchable by this user."""
    try:
        return path.exists()
    except PermissionError:
        return False


def check_http_access(cfg: ServiceConfig) -> Check | None:
    """Who can use the API: the token (readable, long enough) against ``http.host``."""
    from edge.service.config import TOKEN_HINT, exposure_problem, is_loopback_host, resolve_token

    h = cfg.http
    if not h.enabled and not h.unix_socket:
        return None
    try:
        secret = resolve_token(h)
    except ConfigError as exc:
        return Check("http access", FAIL, str(exc), "fix the token before starting")
    problem = exposure_problem(h, secret)
    if problem:
        return Check("http access", FAIL, problem, "the service refuses to start like this")
    where = h.host if h.enabled else "the Unix socket only"
    if secret:
        return Check("http access", OK, f"token set ({len(secret)} characters); {where}")
    if h.enabled and not is_loopback_host(h.host):
        return Check(
            "http access",
            WARN,
            f"{h.host} without a token (http.allow_unauthenticated = true): anyone on the "
            "network can trigger, watch the live camera and read every result",
            TOKEN_HINT,
        )
    return Check("http access", OK, f"no token; {where} (this machine only)")


def check_optional(cfg: ServiceConfig) -> list[Check]:
    out = []
    if cfg.mqtt.enabled:
        ok = (
            importlib.util.find_spec("paho") is not None
            and importlib.util.find_spec("paho.mqtt") is not None
        )
        out.append(
            Check(
                "mqtt",
                OK if ok else FAIL,
                "paho-mqtt installed" if ok else "mqtt.enabled but paho-mqtt missing",
                "pip install paho-mqtt",
            )
        )
    if cfg.trigger.gpio.enabled:
        ok = importlib.util.find_spec("gpiozero") is not None
        out.append(
            Check(
                "gpio",
                OK if ok else FAIL,
                "gpiozero installed" if ok else "trigger.gpio.enabled but gpiozero missing",
                "sudo apt install python3-gpiozero python3-lgpio",
            )
        )
    access = check_http_access(cfg)
    if access is not None:
        out.append(access)
    if cfg.http.enabled:
        try:
            family = socket.AF_INET6 if ":" in cfg.http.host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((cfg.http.host, cfg.http.port))
            out.append(Check("http", OK, f"{cfg.http.host}:{cfg.http.port} is free"))
        except OSError as exc:
            out.append(
                Check(
                    "http",
                    WARN,
                    f"cannot bind {cfg.http.host}:{cfg.http.port}: "
                    f"{exc.strerror} (the service itself, or another program?)",
                    "change http.port if another program uses it",
                )
            )
    return out


def run_checks(
    config_path: str | None,
    user: str | None = "fastsam-edge",
    probe: Probe | None = None,
    cfg: ServiceConfig | None = None,
) -> list[Check]:
    """All checks, in order.

    Args:
        config_path: Config file to validate and use (None: defaults / ``cfg``).
        user: Service user whose groups to check too.
        probe: Facts source (tests).
        cfg: A configuration to use instead of reading ``config_path``.
    """
    probe = probe or Probe()
    checks = [check_os(probe), check_python(), check_onnxruntime()]
    if cfg is None:
        if config_path is not None:
            try:
                cfg = load_config(config_path)
                checks.append(Check("config", OK, f"{config_path} is valid"))
            except ConfigError as exc:
                fix = "fix the named key"
                if "Permission denied" in str(exc):
                    fix = (
                        "join the service's group: sudo usermod -aG fastsam-edge $USER, then log "
                        "in again (sudo scripts/install_pi.sh does this for the user who runs it)"
                    )
                checks.append(Check("config", FAIL, str(exc), fix))
                cfg = ServiceConfig()
        else:
            cfg = ServiceConfig()
            checks.append(
                Check(
                    "config",
                    WARN,
                    "no config file given; checking the defaults",
                    "pass --config /etc/fastsam-edge/config.toml",
                )
            )
    checks.append(check_numpy_abi(probe, cfg.source.kind == "picamera2"))
    checks.append(check_camera(cfg, probe))
    checks.extend(check_groups(user))
    if Path("/dev/dma_heap").is_dir() and not os.access("/dev/dma_heap", os.R_OK):
        checks.append(
            Check(
                "dma_heap",
                WARN,
                "/dev/dma_heap is not readable by this user",
                "join the video group",
            )
        )
    bundle_check, model_bytes = check_bundle(cfg)
    checks.append(bundle_check)
    limit_check, peak = check_memory_limit(cfg, probe)
    checks.append(check_memory(cfg, model_bytes, probe, peak))
    checks.append(limit_check)
    text_check = check_text_support(cfg)
    if text_check is not None:
        checks.append(text_check)
    checks.append(check_int8_cpu(cfg.model.precision))
    checks.append(check_disk(cfg))
    checks.extend(check_optional(cfg))
    checks.extend(check_drift(cfg, config_path, probe))
    return checks


def report(checks: list[Check], as_json: bool = False) -> tuple[str, int]:
    """Text (or JSON) report and the exit code (1 if anything FAILed)."""
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    if as_json:
        body: Any = {"checks": [asdict(c) for c in checks], "failed": failed, "warnings": warned}
        return json.dumps(body, indent=2), int(failed > 0)
    lines = [line for c in checks for line in c.lines()]
    lines.append(
        f"doctor: {len(checks)} checks, {failed} failed, {warned} warnings"
        + (" - ready to serve" if not failed else "")
    )
    return "\n".join(lines), int(failed > 0)
