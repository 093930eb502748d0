"""doctor: MemoryMax and RAM against the bundle's measured peak (fake unit files and
/proc/meminfo under a probe root), version / bundle / config drift, text-prompt support."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from edge.service.config import ServiceConfig
from edge.service.doctor import (
    FAIL,
    OK,
    WARN,
    Probe,
    check_bundle,
    check_drift,
    check_memory_limit,
    check_text_support,
    unit_setting,
)
from edge.service.install import Installer, parse_memory_size

UNIT = "etc/systemd/system/fastsam-edge.service"
PEAKS = {"fp32": {"segment": 252.0, "text": 1080.0}, "int8": {"segment": 185.0, "text": 564.0}}


@pytest.fixture
def bundle(tmp_path, demo_bundle) -> Path:
    """The demo bundle with FastSAM-s-like measured peaks (fp32 default, CLIP present)."""
    dest = tmp_path / "bundle"
    shutil.copytree(demo_bundle, dest)
    doc = json.loads((dest / "bundle.json").read_text())
    doc["default_precision"] = "fp32"
    doc["memory"] = {"peak_mib": PEAKS, "frame_hw": [960, 1280], "threads": 2}
    (dest / "bundle.json").write_text(json.dumps(doc))
    return dest


def _probe(root: Path, ram_mib: int | None, memory_max: str | None, dropin: str | None = None):
    (root / "proc").mkdir(parents=True, exist_ok=True)
    if ram_mib is not None:
        (root / "proc/meminfo").write_text(
            f"MemTotal: {ram_mib * 1024} kB\nMemAvailable: {ram_mib * 900} kB\n"
        )
    if memory_max is not None:
        unit = root / UNIT
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(f"[Service]\nExecStart=/bin/true\nMemoryMax={memory_max}\n")
        if dropin is not None:
            d = unit.parent / "fastsam-edge.service.d"
            d.mkdir()
            (d / "override.conf").write_text(f"[Service]\nMemoryMax={dropin}\n")
    return Probe(root=root, health=lambda cfg: None)


@pytest.mark.parametrize(
    ("precision", "ram", "memory_max", "dropin", "status", "says"),
    [
        # the case: 1G is below FastSAM-s fp32 + CLIP's 1080 MiB
        ("", 4096, "1G", None, FAIL, "below the bundle peak 1080 MiB (fp32 + text prompt)"),
        ("", 4096, "1664M", None, OK, "MemoryMax=1664M"),
        ("", 4096, "1200M", None, WARN, "little headroom"),
        ("", 4096, "1G", "2G", OK, "fastsam-edge.service.d/override.conf"),  # drop-in wins
        ("", 4096, "infinity", None, OK, "MemoryMax=infinity"),
        ("", 4096, "20%", None, FAIL, "below the bundle peak"),  # 819 MiB
        ("int8", 4096, "1G", None, OK, "564 MiB (int8 + text prompt)"),
        ("", 1024, "1664M", None, FAIL, "the board has 1024 MiB of RAM"),  # a 1 GB Pi
        ("", 1800, "1664M", None, WARN, "most of the board's 1800 MiB"),
        ("", 4096, None, None, OK, "no unit installed"),
    ],
)
def test_doctor_memory_limit(tmp_path, bundle, precision, ram, memory_max, dropin, status, says):
    cfg = ServiceConfig().replace(**{"model.bundle": str(bundle), "model.precision": precision})
    probe = _probe(tmp_path / "root", ram, memory_max, dropin)
    check, peak = check_memory_limit(cfg, probe)
    assert check.status == status, check
    assert says in check.message, check.message
    assert peak == (564.0 if precision == "int8" else 1080.0)
    if status == FAIL and "below" in says:
        # says what to change: the recommended limit, and the cheaper int8 setting
        assert "MemoryMax=1664M" in check.fix and 'model.precision = "int8"' in check.fix
    if "RAM" in says:
        assert 'model.precision = "int8" with text prompts needs 564 MiB' in check.fix


def test_doctor_memory_limit_without_a_measurement(tmp_path, bundle):
    doc = json.loads((bundle / "bundle.json").read_text())
    del doc["memory"]
    (bundle / "bundle.json").write_text(json.dumps(doc))
    cfg = ServiceConfig().replace(**{"model.bundle": str(bundle)})
    check, peak = check_memory_limit(cfg, _probe(tmp_path / "root", 4096, "1G"))
    assert check.status == WARN and peak is None and "no measured peak" in check.message
    assert "fastsam-export" in check.fix


@pytest.mark.parametrize(
    ("text", "total", "expected"),
    [
        ("1G", None, 1 << 30),
        ("1664M", None, 1664 << 20),
        ("512K", None, 512 << 10),
        ("2147483648", None, 1 << 31),
        ("infinity", None, None),
        ("50%", 4 << 30, 2 << 30),
    ],
)
def test_parse_memory_size(text, total, expected):
    assert parse_memory_size(text, total) == expected


@pytest.mark.parametrize("bad", ["12Q", "lots", "50%"])
def test_parse_memory_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_memory_size(bad)


def test_unit_setting_reads_drop_ins_last(tmp_path):
    _probe(tmp_path, 1024, "1G", "3G")
    assert unit_setting(tmp_path, "MemoryMax") == (
        "3G",
        "/etc/systemd/system/fastsam-edge.service.d/override.conf",
    )
    assert unit_setting(tmp_path, "CPUQuota") == (None, "")


def _installed(tmp_path: Path, bundle: Path) -> tuple[Path, ServiceConfig, Path]:
    root = tmp_path / "root"
    src = tmp_path / "src.toml"
    src.write_text(f'[model]\nbundle = "{bundle}"\n')
    Installer(root=root, config_source=src).run()
    config = root / "etc/fastsam-edge/config.toml"
    return root, ServiceConfig().replace(**{"model.bundle": str(bundle)}), config


def test_doctor_drift_none_right_after_install(tmp_path, bundle):
    root, cfg, config = _installed(tmp_path, bundle)
    from edge import __version__
    from edge.bundle import read_manifest

    m = read_manifest(bundle)
    health = {
        "version": __version__,
        "bundle": {"name": m.name, "sha256": m.files["fastsam.fp32.onnx"].sha256},
        "uptime_s": 5.0,
    }
    os.utime(config, (time.time() - 60, time.time() - 60))  # written before the start
    checks = check_drift(cfg, str(config), Probe(root=root, health=lambda c: health))
    assert [(c.name, c.status) for c in checks] == [
        ("install drift", OK),
        ("running service", OK),
    ], checks


def test_doctor_reports_version_bundle_and_config_drift(tmp_path, bundle, demo_bundle):
    root, cfg, config = _installed(tmp_path, bundle)
    record = root / "var/lib/fastsam-edge/install.json"
    doc = json.loads(record.read_text())
    doc["version"] = "0.0.1"
    record.write_text(json.dumps(doc))
    # the config now names another bundle (the demo one) than the unit was set up for
    cfg2 = cfg.replace(**{"model.bundle": "demo", "output.dir": "/srv/results"})
    health = {"version": "0.0.1", "bundle": {"name": "old", "sha256": "ab" * 32}, "uptime_s": 3600}
    checks = {
        c.name: c
        for c in check_drift(cfg2, str(config), Probe(root=root, health=lambda c: health))
    }
    install = checks["install drift"]
    assert install.status == WARN and "installed as version 0.0.1" in install.message
    assert "MemoryMax= may not fit it" in install.message and "install_pi.sh" in install.fix
    running = checks["running service"]
    assert running.status == WARN and "runs version 0.0.1" in running.message
    assert "runs bundle old" in running.message
    assert "changed after the service started" in running.message  # config newer than start
    assert running.fix == "sudo systemctl restart fastsam-edge"
    unit = checks["unit vs config"]
    assert unit.status == FAIL and "/srv/results" in unit.message


def test_doctor_config_permission_denied_says_join_the_group(tmp_path, monkeypatch):
    from edge.service import doctor
    from edge.service.config import ConfigError

    def denied(path):
        raise ConfigError(f"{path}: cannot read: Permission denied")

    monkeypatch.setattr(doctor, "load_config", denied)
    checks = doctor.run_checks("/etc/fastsam-edge/config.toml", user=None)
    cfg_check = next(c for c in checks if c.name == "config")
    assert cfg_check.status == FAIL and "usermod -aG fastsam-edge" in cfg_check.fix


def test_doctor_text_support(detector_only_bundle, demo_bundle, monkeypatch):
    from edge import tokenizer

    none = check_text_support(
        ServiceConfig().replace(**{"model.bundle": str(detector_only_bundle)})
    )
    assert none is not None and none.status == OK and "no CLIP" in none.message
    monkeypatch.setattr(tokenizer, "missing_text_deps", lambda: ["ftfy"])
    missing = check_text_support(ServiceConfig())
    assert missing is not None and missing.status == WARN and "--text" in missing.fix
    monkeypatch.setattr(tokenizer, "missing_text_deps", lambda: [])
    ok = check_text_support(ServiceConfig())
    assert ok is not None and ok.status == OK


@pytest.mark.parametrize(
    ("pi_groups", "active", "expected"),
    [
        # right after install_pi.sh: in the group, but this login predates it
        (["fastsam-edge"], [], [("groups of pi", WARN, "since the last login only")]),
        (["fastsam-edge"], ["fastsam-edge"], []),
        ([], [], [("groups of pi", WARN, "not readable without sudo")]),
    ],
)
def test_doctor_groups_of_the_login_user(monkeypatch, pi_groups, active, expected):
    from types import SimpleNamespace as NS

    from edge.service import doctor

    gids = {"pi": 1000, "video": 44, "gpio": 997, "fastsam-edge": 998}
    members = {
        "video": ["fastsam-edge"],
        "gpio": ["fastsam-edge"],
        "fastsam-edge": pi_groups and ["pi"],
    }
    groups = {n: NS(gr_name=n, gr_gid=g, gr_mem=members.get(n) or []) for n, g in gids.items()}
    users = {
        "pi": NS(pw_name="pi", pw_uid=1000, pw_gid=1000),
        "fastsam-edge": NS(pw_name="fastsam-edge", pw_uid=998, pw_gid=998),
    }

    def getgrnam(name):
        if name not in groups:
            raise KeyError(name)
        return groups[name]

    monkeypatch.setattr(doctor.os, "getuid", lambda: 1000)
    monkeypatch.setattr(doctor.os, "getgroups", lambda: [1000] + [gids[g] for g in active])
    monkeypatch.setattr(doctor.pwd, "getpwuid", lambda uid: users["pi"])
    monkeypatch.setattr(doctor.pwd, "getpwnam", lambda n: users[n])
    monkeypatch.setattr(doctor.grp, "getgrall", lambda: list(groups.values()))
    monkeypatch.setattr(doctor.grp, "getgrnam", getgrnam)
    monkeypatch.setattr(
        doctor.grp, "getgrgid", lambda g: next(x for x in groups.values() if x.gr_gid == g)
    )
    checks = doctor.check_groups("fastsam-edge")
    got = [(c.name, c.status, c.message) for c in checks if c.status != OK]
    # the login user lacks video: only a warning (the service user has the camera)
    assert ("groups of pi", WARN) in [(n, s) for n, s, _ in got]
    video = next(m for n, s, m in got if "not in video" in m)
    assert "needed only to use the camera yourself" in video
    assert not [c for c in checks if c.status == FAIL]
    for name, status, says in expected:
        assert any(n == name and s == status and says in m for n, s, m in got), got
    if not expected:
        assert not any("fastsam-edge" in m and "not in video" not in m for _, _, m in got)


@pytest.mark.parametrize(
    ("changes", "status", "words"),
    [
        ({"http.host": "0.0.0.0"}, FAIL, ("http.host", "http.token_file", "refuses to start")),
        ({"http.host": "0.0.0.0", "http.allow_unauthenticated": True}, WARN, ("without a token",)),
        ({"http.host": "0.0.0.0", "http.token": "0123456789abcdef"}, OK, ("16 characters",)),
        ({}, OK, ("this machine only",)),
        ({"http.enabled": False}, None, ()),
    ],
)
def test_http_access_check(changes, status, words):
    from edge.service.doctor import check_http_access

    check = check_http_access(ServiceConfig().replace(**changes))
    if status is None:
        assert check is None
        return
    assert check is not None and check.status == status
    text = " ".join(check.lines())
    assert all(w in text for w in words), text


def test_http_access_check_fails_on_a_short_token_file(tmp_path):
    from edge.service.doctor import check_http_access

    (tmp_path / "token").write_text("abc\n")
    check = check_http_access(
        ServiceConfig().replace(**{"http.token_file": str(tmp_path / "token")})
    )
    assert check is not None and check.status == FAIL and "openssl rand -hex 16" in check.message


@pytest.mark.parametrize(("secret", "status"), [(None, OK), ("viewer:pw", OK), ("dir", FAIL)])
def test_camera_check_of_a_stream_needs_no_device_and_hides_credentials(tmp_path, secret, status):
    from edge.service.doctor import check_camera

    changes = {"source.kind": "stream", "source.url": "rtsp://u:pw@cam.lan/s"}
    if secret == "dir":
        changes["source.credentials_file"] = str(tmp_path)
    elif secret is not None:
        (tmp_path / "cred").write_text(secret)
        changes["source.credentials_file"] = str(tmp_path / "cred")
    check = check_camera(ServiceConfig().replace(**changes), Probe(root=tmp_path))
    assert check.status == status
    assert "pw" not in check.message


def test_doctor_refuses_a_vocabulary_on_a_fastsam_bundle():
    cfg = ServiceConfig().replace(**{"processing.vocabulary": ["dog"]})
    check, _ = check_bundle(cfg)
    assert check.status == FAIL and check.message.startswith("processing.vocabulary: ")
    assert "FastSAM" in check.message and "YOLOE" in check.fix
    assert check_bundle(ServiceConfig())[0].status == OK
