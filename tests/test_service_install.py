"""Installation: the unit file (systemd-analyze verify / security), install-service under
--root (twice: the second run changes nothing), scripts/install_pi.sh, doctor."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bundle import read_manifest
from edge.service.config import ConfigError, ServiceConfig
from edge.service.doctor import FAIL, OK, Probe, check_os, report, run_checks
from edge.service.install import Installer, bundle_memory, memory_max_for, render_unit

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "fastsam-edge.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
NEEDS_SYSTEMD = (
    "systemd-analyze is missing: the CI machine needs `apt-get install -y systemd` "
    "(tests never install packages themselves)"
)


def test_committed_unit_is_the_rendered_template():
    assert UNIT.read_text() == render_unit(), (
        "systemd/fastsam-edge.service is stale: regenerate it from "
        "edge.service.install.render_unit()"
    )


def test_unit_has_no_trailing_comments_and_keeps_devices():
    text = UNIT.read_text()
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            assert "#" not in line.split("=", 1)[1], f"trailing comment: {line!r}"
    keys = dict(
        line.split("=", 1)
        for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert "PrivateDevices" not in keys and "DevicePolicy" not in keys
    assert "DeviceAllow" not in keys and "ProtectClock" not in keys
    assert keys["Type"] == "notify" and keys["Restart"] == "on-failure"
    assert keys["SupplementaryGroups"] == "video gpio"
    assert keys["ProtectSystem"] == "strict" and keys["NoNewPrivileges"] == "yes"
    assert keys["PrivateTmp"] == "yes" and keys["ReadWritePaths"].endswith(
        "/var/lib/fastsam-edge/results"
    )
    assert "MemoryMax" in keys and "WatchdogSec" in keys


def _unit_for_analysis(tmp_path: Path) -> Path:
    """The unit with an ExecStart that exists on this machine (verify checks it)."""
    exec_start = f"{sys.executable} -m edge.cli serve --config /etc/fastsam-edge/config.toml"
    path = tmp_path / "fastsam-edge.service"
    path.write_text(render_unit(exec_start=exec_start))
    return path


def _verify(unit):
    """``systemd-analyze verify`` on a unit file (run in its directory)."""
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        cwd=unit.parent,
        check=False,
    )


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason=NEEDS_SYSTEMD)
def test_systemd_analyze_verify_is_silent(tmp_path):
    unit = _unit_for_analysis(tmp_path)
    proc = _verify(unit)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"systemd-analyze verify warned:\n{proc.stderr}"


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason=NEEDS_SYSTEMD)
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    unit = _unit_for_analysis(tmp_path)
    unit.write_text(
        unit.read_text()
        .replace("Restart=on-failure", "Restart=onfailure")
        .replace("User=", "User=fastsam-edge  # the user\nX=")
    )
    proc = _verify(unit)
    assert proc.stderr != ""  # what the silent-verify test relies on


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason=NEEDS_SYSTEMD)
def test_systemd_analyze_security_exposure(tmp_path):
    unit = _unit_for_analysis(tmp_path)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    exposure = float(match.group(1))
    assert exposure <= 2.0, f"exposure {exposure} > 2.0:\n{proc.stdout}"
    # the camera's devices stay reachable: no PrivateDevices / closed device policy
    assert re.search(r"✗ PrivateDevices=", proc.stdout)


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        content = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else None)
        out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, content)
    return out


def test_install_under_root_twice_changes_nothing_the_second_time(tmp_path):
    root = tmp_path / "root"
    first = Installer(root=root, venv="/opt/fastsam-edge/venv").run()
    statuses = {s.what: s.status for s in first}
    assert statuses["file /etc/fastsam-edge/config.toml"] == "created"
    assert statuses["file /etc/systemd/system/fastsam-edge.service"] == "created"
    assert statuses["config /etc/fastsam-edge/config.toml"] == "valid"
    unit = root / "etc/systemd/system/fastsam-edge.service"
    # MemoryMax follows the demo bundle's measured peak (fp32 + text prompt) plus headroom
    need = bundle_memory(ServiceConfig())
    assert need.peak_mib is not None and "text prompt" in need.what
    assert unit.read_text() == render_unit(memory_max=memory_max_for(need.peak_mib))
    assert statuses[f"MemoryMax={memory_max_for(need.peak_mib)}"] == "from bundle"
    record = json.loads((root / "var/lib/fastsam-edge/install.json").read_text())
    assert record["bundle"]["name"] == read_manifest(need.bundle).name
    assert record["memory_max"] == memory_max_for(need.peak_mib)
    link = root / "etc/systemd/system/multi-user.target.wants/fastsam-edge.service"
    assert os.readlink(link) == "/etc/systemd/system/fastsam-edge.service"
    assert (root / "etc/fastsam-edge/config.toml").stat().st_mode & 0o777 == 0o640
    assert (root / "var/lib/fastsam-edge/results").is_dir()
    before = _snapshot(root)
    second = Installer(root=root, venv="/opt/fastsam-edge/venv").run()
    assert _snapshot(root) == before
    changed = [
        s for s in second if s.status not in ("unchanged", "skipped", "valid", "from bundle")
    ]
    assert changed == []


def test_install_keeps_the_users_config_and_updates_the_unit(tmp_path):
    root = tmp_path / "root"
    Installer(root=root).run()
    cfg = root / "etc/fastsam-edge/config.toml"
    cfg.write_text('[output]\ndir = "/srv/results"\n')
    steps = Installer(root=root, venv="/opt/other/venv").run()
    assert cfg.read_text() == '[output]\ndir = "/srv/results"\n'
    unit = (root / "etc/systemd/system/fastsam-edge.service").read_text()
    assert "ExecStart=/opt/other/venv/bin/fastsam-edge serve" in unit
    assert "ReadWritePaths=-/srv/results" in unit  # the configured output dir is writable
    assert (root / "srv/results").is_dir()
    assert {s.what: s.status for s in steps}[
        "file /etc/systemd/system/fastsam-edge.service"
    ] == "updated"


def test_install_dry_run_and_uninstall(tmp_path):
    root = tmp_path / "root"
    steps = Installer(root=root, dry_run=True).run()
    assert not root.exists() or not any(root.rglob("*.service"))
    assert any(s.status == "would create" for s in steps)
    Installer(root=root).run()
    (root / "var/lib/fastsam-edge/results/r1").mkdir()
    Installer(root=root).uninstall()
    assert not (root / "etc/systemd/system/fastsam-edge.service").exists()
    assert not (root / "var/lib/fastsam-edge/install.json").exists()
    assert (root / "etc/fastsam-edge/config.toml").exists()  # config is kept
    assert (root / "var/lib/fastsam-edge/results/r1").is_dir()  # and results
    steps = Installer(root=root).uninstall(purge=True)
    assert (
        not (root / "etc/fastsam-edge").exists() and not (root / "var/lib/fastsam-edge").exists()
    )
    assert not (root / "etc/default/fastsam-edge").exists()
    assert {s.what: s.status for s in steps}["remove /var/lib/fastsam-edge"] == "removed"


@pytest.mark.parametrize(
    ("memory", "flag", "expected", "status"),
    [
        ({"fp32": {"segment": 252.0, "text": 1080.0}}, "auto", "1664M", "from bundle"),
        ({"fp32": {"segment": 185.0}}, "auto", "448M", "from bundle"),  # +256 MiB at least
        (None, "auto", "1G", "default"),  # exported before the measurement
        ({"fp32": {"segment": 252.0, "text": 1080.0}}, "3G", "3G", None),  # explicit wins
    ],
)
def test_install_memory_max_follows_the_bundle(
    tmp_path, demo_bundle, memory, flag, expected, status
):
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    doc = json.loads((bundle / "bundle.json").read_text())
    doc["default_precision"] = "fp32"
    doc.pop("memory")
    if memory is not None:
        doc["memory"] = {"peak_mib": memory, "frame_hw": [960, 1280], "threads": 2}
    (bundle / "bundle.json").write_text(json.dumps(doc))
    src = tmp_path / "config.toml"
    src.write_text(f'[model]\nbundle = "{bundle}"\n')
    root = tmp_path / "root"
    steps = Installer(root=root, config_source=src, memory_max=flag).run()
    unit = (root / "etc/systemd/system/fastsam-edge.service").read_text()
    assert f"\nMemoryMax={expected}\n" in unit
    if status is not None:
        step = next(s for s in steps if s.what == f"MemoryMax={expected}")
        assert step.status == status
        assert ("has no measured peak memory" in step.detail) == (memory is None)


def test_install_service_cli_under_root(tmp_path, capsys):
    from edge.cli import main

    root = tmp_path / "r"
    assert main(["install-service", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "created" in out and "install-service:" in out
    assert main(["install-service", "--root", str(root)]) == 0
    assert "install-service: 0 changed, 0 failed" in capsys.readouterr().out


def test_install_pi_script_syntax_and_dry_run(tmp_path):
    script = REPO / "scripts" / "install_pi.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    proc = subprocess.run(
        ["bash", str(script), "--dry-run", "--src", str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in (
        "apt-get install",
        "python3-picamera2",
        "--system-site-packages",
        "numpy==",
        "opencv-python-headless<4.12",
        "install-service",
        "doctor",
    ):
        assert needle in out, f"{needle!r} missing from the plan:\n{out}"


# --------------------------------------------------------------------------------------------
# doctor
# --------------------------------------------------------------------------------------------


def test_doctor_rejects_a_32_bit_os():
    check = check_os(Probe(machine="armv7l", pointer_bits=32))
    assert check.status == FAIL and "no 32-bit ARM wheels" in check.message
    assert "64-bit" in check.fix
    assert check_os(Probe(machine="aarch64", pointer_bits=64)).status == OK


def test_doctor_on_a_replay_config_passes(tmp_path):
    (tmp_path / "frames").mkdir()
    cfg = ServiceConfig().replace(
        **{
            "source.kind": "replay",
            "source.path": str(tmp_path / "frames"),
            "output.dir": str(tmp_path / "out"),
            "output.min_free_mb": 1.0,
            "output.max_mb": 1.0,
            "http.port": 0,
        }
    )
    checks = run_checks(None, user=None, cfg=cfg)
    names = {c.name: c for c in checks}
    assert names["bundle"].status == OK and "demo bundle" in names["bundle"].message
    assert names["camera"].status == OK and names["64-bit OS"].status == OK
    text, _ = report(checks)
    # group membership depends on who runs the tests; everything else must pass here
    failed = [c for c in checks if c.status == FAIL and not c.name.startswith("groups of")]
    assert failed == [], text
    assert "doctor:" in text.splitlines()[-1]


def test_doctor_reports_a_broken_bundle_and_config(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text(
        '[model]\nbundle = "/nonexistent/bundle"\n[output]\ndir = "%s"\n' % (tmp_path / "out")
    )
    checks = run_checks(str(bad), user=None)
    bundle = next(c for c in checks if c.name == "bundle")
    assert bundle.status == FAIL and "/nonexistent/bundle" in bundle.message
    _, code = report(checks)
    assert code == 1
    broken = tmp_path / "broken.toml"
    broken.write_text("[trigger]\nqueue_size = 0\n")
    checks = run_checks(str(broken), user=None)
    cfg_check = next(c for c in checks if c.name == "config")
    assert cfg_check.status == FAIL and "trigger.queue_size" in cfg_check.message


def test_doctor_numpy_abi_mismatch_is_explained(monkeypatch):
    import importlib.util

    from edge.service import doctor

    real = importlib.util.find_spec
    monkeypatch.setattr(
        doctor.importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "picamera2" else real(name, *a),
    )
    probe = Probe(
        run=lambda cmd, timeout: (
            1,
            "ValueError: numpy.dtype size changed, may indicate binary incompatibility",
        )
    )
    monkeypatch.setattr(doctor, "_system_numpy", lambda root: "1.24.2")
    check = doctor.check_numpy_abi(probe, needs_camera=True)
    assert check.status == FAIL and "numpy ABI mismatch" in check.message
    assert "numpy==1.24.2" in check.fix


def _settings(unit_text: str) -> list[tuple[str, str]]:
    """The unit's ``Key=value`` lines, as systemd splits them (one setting a line)."""
    return [
        tuple(line.split("=", 1))  # type: ignore[misc]
        for line in unit_text.splitlines()
        if "=" in line and not line.startswith(("#", "["))
    ]


def _unquote(word: str) -> str:
    """What systemd makes of one quoted word of ExecStart= (escapes, %%, $$)."""
    import shlex

    (only,) = shlex.split(word)
    return only.replace("%%", "%").replace("$$", "$")


@pytest.mark.parametrize(
    "out_dir",
    ["/srv/cam results", "/srv/100%/%h", "/srv/it's", "/srv/plain", "/srv/ünï/📷"],
)
def test_unit_quotes_paths_for_systemd(tmp_path, out_dir):
    venv = f"{tmp_path}/my venv$HOME%n"
    config = "/etc/fastsam edge/$USER/config.toml"
    text = render_unit(venv=venv, config_path=config, output_dir=out_dir)
    settings = _settings(text)
    (rw,) = [v for k, v in settings if k == "ReadWritePaths"]
    assert _unquote(rw) == f"-{out_dir}"
    (exec_start,) = [v for k, v in settings if k == "ExecStart"]
    import shlex

    words = [w.replace("%%", "%") for w in shlex.split(exec_start)]
    words[1:] = [w.replace("$$", "$") for w in words[1:]]  # the program is not expanded
    assert words == [f"{venv}/bin/fastsam-edge", "serve", "--config", config]
    if SYSTEMD_ANALYZE is not None:  # systemd itself accepts it, without a warning
        bin_dir = Path(f"{venv}/bin")
        bin_dir.mkdir(parents=True)
        (bin_dir / "fastsam-edge").write_text("#!/bin/sh\n")
        (bin_dir / "fastsam-edge").chmod(0o755)
        unit = tmp_path / "fastsam-edge.service"
        unit.write_text(text)
        proc = _verify(unit)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"output_dir": "/srv/x\nUser=root"}, "output.dir"),
        ({"output_dir": "/srv/x\rExecStartPre=/bin/sh"}, "output.dir"),
        ({"output_dir": '/srv/x"y'}, "output.dir"),
        ({"venv": "/opt/v\nUser=root"}, "--venv"),
        ({"config_path": "/etc/c\x00"}, "--config"),
        ({"exec_start": "/bin/true\nUser=root"}, "ExecStart"),
    ],
)
def test_a_newline_cannot_add_a_directive(changes, key):
    with pytest.raises(ConfigError, match=key):
        render_unit(**changes)


def test_install_with_a_newline_in_output_dir_writes_no_directive(tmp_path, capsys):
    from edge.cli import main

    root = tmp_path / "root"
    config = root / "etc/fastsam-edge/config.toml"
    config.parent.mkdir(parents=True)
    # TOML's "\n" escape: a newline inside the value, then what would be a directive
    config.write_text('[output]\ndir = "/srv/x\\nUser=root\\nExecStartPre=/bin/sh -c id"\n')
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "output.dir: control characters" in err and "Traceback" not in err
    Installer(root=root, venv="/opt/fastsam-edge/venv").run()
    settings = _settings(_unit_text(root))
    keys = [k for k, _ in settings]
    assert "ExecStartPre" not in keys and keys.count("User") == 1
    assert dict(settings)["User"] == "fastsam-edge"


def _unit_text(root: Path) -> str:
    return (root / "etc/systemd/system/fastsam-edge.service").read_text()


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[model]\nbundle = "/m\\u0000x"\n', "model.bundle"),
        ('[http]\ntoken_file = "/t\\u0000"\n', "http.token_file"),
        ('[source]\nkind = "replay"\npath = "/a\\u001bb"\n', "source.path"),
        ('[mqtt]\nclient_id = "a\\u0000"\n', "mqtt.client_id"),
    ],
)
def test_control_characters_in_config_strings_name_the_key(tmp_path, capsys, toml, key):
    from edge.cli import main

    config = tmp_path / "config.toml"
    config.write_text(toml)
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err
