"""The Pi owner's path: the README's Pi commands are ones the tools accept (so the README
cannot drift), scripts/install_pi.sh's plan and its failed-upgrade rollback, the first-run
config of ``fastsam-edge configure`` producing results, and ``info``'s text-prompt line.

The full walk (installer as root in a Debian bookworm root, then the README's commands as a
login user) is the opt-in tests/test_pi_walk.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from edge.cli import build_parser, main
from edge.service.config import load_config
from edge.service.install import SERVICE_NAME, STATE_DIR

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
INSTALLER = REPO / "scripts" / "install_pi.sh"


def readme_pi_commands() -> list[str]:
    """The command lines of the README's "On the Pi" block, comments stripped."""
    text = README.read_text()
    start = text.index("On the Pi")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block, "README: no ```sh block after 'On the Pi'"
    lines = []
    for raw in block.group(1).splitlines():
        line = re.sub(r"\s+#.*$", "", raw).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _installer_flags() -> set[str]:
    """The flags scripts/install_pi.sh's argument loop accepts."""
    loop = INSTALLER.read_text().split("while (($#)); do", 1)[1].split("done", 1)[0]
    return set(re.findall(r"^\s*(--[a-z-]+)\)", loop, re.M))


def test_readme_pi_section_commands_are_accepted():
    commands = readme_pi_commands()
    assert commands[0].startswith("sudo scripts/install_pi.sh")  # it needs root
    parser = build_parser()
    seen = set()
    for line in commands:
        argv = shlex.split(line)
        if argv[0] == "sudo":
            argv = argv[1:]
        tool = argv[0]
        seen.add(tool)
        if tool == "fastsam-edge":  # on PATH through /usr/local/bin
            try:
                parser.parse_args(argv[1:])
            except SystemExit as exc:
                pytest.fail(f"README: `{line}` is not accepted by fastsam-edge (exit {exc.code})")
            bundle = argv[argv.index("--bundle") + 1] if "--bundle" in argv else None
            if bundle is not None:  # the service and the login user read models from here
                assert bundle.startswith(f"{STATE_DIR}/models/"), line
        elif tool == "scripts/install_pi.sh":
            flags = {a for a in argv[1:] if a.startswith("--")}
            assert flags <= _installer_flags(), (
                f"README: {line}: unknown {flags - _installer_flags()}"
            )
        elif tool in ("systemctl", "journalctl"):
            assert SERVICE_NAME in argv, line
        elif tool == "ls":
            assert argv[1] == f"{STATE_DIR}/results", line
        else:  # the new groups in this shell (`logout` fails in a desktop's terminal)
            assert argv[:2] == ["newgrp", "fastsam-edge"], f"README: unexpected: {line}"
    assert {"fastsam-edge", "scripts/install_pi.sh", "systemctl"} <= seen


def test_readme_pi_bundle_name_matches_the_export():
    """The bundle the README exports is the one it installs and then uses."""
    text = README.read_text()
    exported = re.search(r"fastsam-export \S+ --out (\S+)", text).group(1)
    install = next(c for c in readme_pi_commands() if "install_pi.sh" in c)
    assert Path(shlex.split(install)[-1]).name == exported
    for line in readme_pi_commands():
        if "--bundle" in line and "install_pi.sh" not in line:
            assert line.split("--bundle ", 1)[1].split()[0].endswith(f"/models/{exported}")


def _dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALLER), "--dry-run", *args],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "SUDO_USER"} | {"SUDO_USER": "pi"},
    )


def test_install_pi_plan_with_a_clip_bundle(demo_bundle):
    proc = _dry_run("--no-apt", "--bundle", str(demo_bundle))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    pins = dict(
        line.split("==")
        for line in (REPO / "scripts/constraints-pi.txt").read_text().splitlines()
        if line.startswith(("onnxruntime==", "opencv-python-headless=="))
    )
    for needle in (
        f"onnxruntime=={pins['onnxruntime']}",  # pinned as tested
        f"opencv-python-headless=={pins['opencv-python-headless']}",
        f"+ copy {REPO} to ",  # built from a temporary copy, not in the clone
        "/fastsam-edge[text]",  # the bundle has CLIP: the text extra
        "ln -sfn /opt/fastsam-edge/venv/bin/fastsam-edge /usr/local/bin/fastsam-edge",
        f"cp -r {demo_bundle} /var/lib/fastsam-edge/models/.demo-bundle.new",
        "configure --config /etc/fastsam-edge/config.toml --bundle "
        "/var/lib/fastsam-edge/models/demo-bundle",
        "install-service --venv /opt/fastsam-edge/venv --config /etc/fastsam-edge/config.toml "
        "--login-user pi",
        "chown -R root:fastsam-edge /var/lib/fastsam-edge/models/demo-bundle",
    ):
        assert needle in out, f"{needle!r} missing from the plan:\n{out}"
    # the new venv is built beside the current one and switched to with one rename
    new = re.search(r"-m venv --system-site-packages (/opt/fastsam-edge/venvs/\S+)", out)
    assert new, out
    assert out.index(f"{new.group(1)}/bin/python -m pip install") < out.index("mv -T")
    assert "apt-get" not in out  # --no-apt


def test_install_pi_plan_without_clip_has_no_text_extra(detector_only_bundle):
    out = _dry_run("--no-apt", "--bundle", str(detector_only_bundle)).stdout
    assert "[text]" not in out
    assert "[text]" in _dry_run("--no-apt", "--text").stdout


@pytest.mark.parametrize(
    ("args", "needles", "absent"),
    [
        (
            ["--uninstall"],
            ["install-service --uninstall", "rm -rf /opt/fastsam-edge", "kept /etc/fastsam-edge"],
            ["uninstall --purge\n", "rm -rf /var/lib"],
        ),
        (
            ["--uninstall", "--purge"],
            ["install-service --uninstall --purge", "models and results"],
            [],
        ),
    ],
)
def test_install_pi_uninstall_plan(args, needles, absent):
    proc = _dry_run(*args)
    assert proc.returncode == 0, proc.stderr
    for needle in needles:
        assert needle in proc.stdout, proc.stdout
    for needle in absent:
        assert needle not in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--purge"], "--purge goes with --uninstall"),
        (["--bundle", "/nonexistent/b"], "no bundle.json"),
        (["--frobnicate"], "unknown argument"),
    ],
)
def test_install_pi_rejects_bad_arguments(args, message):
    proc = _dry_run(*args)
    assert proc.returncode != 0 and message in proc.stderr


def test_install_pi_needs_root_and_says_sudo():
    if os.geteuid() == 0:
        cmd = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            str(INSTALLER),
        ]
    else:
        cmd = ["bash", str(INSTALLER)]
    env = {k: v for k, v in os.environ.items() if k != "FASTSAM_EDGE_PREFIX"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode != 0 and "sudo" in proc.stderr, proc.stderr


FAKE_SYSTEM_PYTHON = """#!/bin/bash
# system python3 stand-in: apt's numpy is 1.24.2, 64-bit; `-m venv DIR` makes a venv whose pip
# records what it was asked to install (and what that folder holds) in $PIP_LOG, then fails
if [[ "$1" == -c && "$2" == *struct* ]]; then echo arm64; exit 0; fi
if [[ "$1" == -c ]]; then echo 1.24.2; exit 0; fi
if [[ "$1 $2" == "-m venv" ]]; then
    d="${@: -1}"; mkdir -p "$d/bin"
    cat > "$d/bin/python" <<'PY'
#!/bin/bash
for a; do last="$a"; done
if [[ -n "${PIP_LOG:-}" ]]; then echo "$last" > "$PIP_LOG"; ls -A "${last%%[*}" >> "$PIP_LOG"; fi
echo "ERROR: no network" >&2
exit 1
PY
    chmod +x "$d/bin/python"; exit 0
fi
exit 3
"""


def test_install_pi_failed_upgrade_keeps_the_previous_venv(tmp_path):
    prefix = tmp_path / "opt"
    old = prefix / "venvs" / "20260101T000000Z-1"
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "fastsam-edge").write_text("#!/bin/sh\n")
    (prefix / "venv").symlink_to("venvs/20260101T000000Z-1")
    fake = tmp_path / "python3"
    fake.write_text(FAKE_SYSTEM_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    proc = subprocess.run(
        ["bash", str(INSTALLER), "--no-apt"],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"FASTSAM_EDGE_PREFIX": str(prefix), "SYSTEM_PYTHON": str(fake)},
    )
    assert proc.returncode != 0
    assert f"pip install failed; the previous install ({old}) is untouched" in proc.stderr
    assert os.readlink(prefix / "venv") == "venvs/20260101T000000Z-1"
    assert sorted(p.name for p in (prefix / "venvs").iterdir()) == [old.name]  # new one gone
    assert "ln -sfn" not in proc.stdout  # never switched


def test_configure_writes_a_config_that_produces_results(tmp_path, demo_bundle, capsys):
    config = tmp_path / "etc" / "config.toml"
    assert main(["configure", "--config", str(config), "--bundle", str(demo_bundle)]) == 0
    cfg = load_config(config)
    assert cfg.model.bundle == str(demo_bundle) and cfg.source.kind == "picamera2"
    assert cfg.trigger.interval.enabled and cfg.trigger.interval.seconds == 60.0
    assert not cfg.trigger.motion.enabled and not cfg.trigger.gpio.enabled
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    # the same config with a camera stand-in: the first interval tick gives a result at once
    out = tmp_path / "results"
    argv = ["serve", "--config", str(config), "--out", str(out), "--max-frames", "1"]
    argv += ["--set", 'source.kind="demo"', "--set", "http.enabled=false"]
    assert main(argv) == 0
    results = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(results) == 1 and (results[0] / "result.json").is_file()
    assert "1 frames, 1 triggers, 1 results written" in capsys.readouterr().out


def test_configure_keeps_an_existing_config_unless_forced(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text("# mine\n")
    assert main(["configure", "--config", str(config)]) == 2
    assert "exists; keeping it" in capsys.readouterr().err and config.read_text() == "# mine\n"
    assert main(["configure", "--config", str(config), "--trigger", "motion", "--force"]) == 0
    assert (tmp_path / "config.toml.bak").read_text() == "# mine\n"
    assert load_config(config).trigger.motion.enabled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bundle", "/nonexistent/bundle"], "/nonexistent/bundle"),
        (["--source", "replay"], "source.path"),
        (["--trigger", "interval", "--interval", "-1"], "trigger.interval.seconds"),
    ],
)
def test_configure_rejects_bad_input(tmp_path, capsys, args, message):
    config = tmp_path / "c.toml"
    assert main(["configure", "--config", str(config), *args]) == 2
    assert message in capsys.readouterr().err and not config.exists()


def test_info_says_whether_text_prompts_work(
    detector_only_bundle, demo_bundle, monkeypatch, capsys
):
    from edge import tokenizer

    assert main(["info", "--bundle", str(detector_only_bundle)]) == 0
    out = capsys.readouterr().out
    assert "text:        not supported: this bundle has no CLIP" in out and "--clip" in out
    monkeypatch.setattr(tokenizer, "missing_text_deps", lambda: ["ftfy", "regex"])
    assert main(["info", "--bundle", str(demo_bundle), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["text_prompts"]["supported"] and doc["text_prompts"]["missing"] == ["ftfy", "regex"]
    assert "install_pi.sh --text" in doc["text_prompts"]["summary"]
    monkeypatch.setattr(tokenizer, "missing_text_deps", lambda: [])
    assert main(["info", "--bundle", str(demo_bundle)]) == 0
    out = capsys.readouterr().out
    assert "tokenizer packages installed" in out and "peak memory: fp32 segment" in out


def test_a_regular_install_ships_every_subpackage():
    """install_pi.sh does a regular (not editable) pip install: setuptools must find
    edge.service and edge.bench too (a plain ``packages`` list ships the top level only)."""
    import fnmatch
    import tomllib

    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "packages" not in tool or isinstance(tool["packages"], dict), tool["packages"]
    include = tool["packages"]["find"]["include"]
    packages = [
        ".".join(p.parent.relative_to(REPO).parts)
        for top in ("edge", "export")
        for p in (REPO / top).rglob("__init__.py")
    ]
    assert {"edge.service", "edge.bench"} <= set(packages)
    missing = [p for p in packages if not any(fnmatch.fnmatch(p, pat) for pat in include)]
    assert missing == [], f"pyproject.toml [tool.setuptools.packages.find] misses {missing}"


def _fake_python(tmp_path: Path) -> Path:
    fake = tmp_path / "python3"
    fake.write_text(FAKE_SYSTEM_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


@pytest.mark.parametrize(
    ("dpkg_arch", "refused"), [("armhf", True), ("arm64", False), ("amd64", False)]
)
def test_install_pi_checks_the_userland_not_the_kernel(tmp_path, dpkg_arch, refused):
    """A 32-bit Raspberry Pi OS runs a 64-bit kernel (uname -m: aarch64): dpkg tells."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, out in (("dpkg", dpkg_arch), ("uname", "aarch64")):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho {out}\n")
        (bin_dir / tool).chmod(0o755)
    proc = subprocess.run(
        ["bash", str(INSTALLER), "--no-apt"],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ
        | {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FASTSAM_EDGE_PREFIX": str(tmp_path / "opt"),
            "SYSTEM_PYTHON": str(_fake_python(tmp_path)),
        },
    )
    assert proc.returncode != 0  # the fake pip fails further on when the check passes
    said = "userland is armhf (kernel: aarch64)" in proc.stderr
    assert said == refused, proc.stderr
    if refused:
        assert "Raspberry Pi OS (64-bit)" in proc.stderr and "+ " not in proc.stdout
    else:
        assert "pip install failed" in proc.stderr


def test_install_pi_builds_from_a_temporary_copy_not_in_the_clone(tmp_path):
    """pip (as root) gets a copy of the checkout: the clone gets no build/ or *.egg-info."""
    log = tmp_path / "pip.log"
    before = sorted(p.name for p in REPO.iterdir())
    proc = subprocess.run(
        ["bash", str(INSTALLER), "--no-apt"],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ
        | {
            "FASTSAM_EDGE_PREFIX": str(tmp_path / "opt"),
            "SYSTEM_PYTHON": str(_fake_python(tmp_path)),
            "PIP_LOG": str(log),
            "TMPDIR": str(tmp_path),
        },
    )
    assert "pip install failed" in proc.stderr, proc.stderr
    target, *listing = log.read_text().splitlines()
    assert target.startswith(str(tmp_path)) and not target.startswith(str(REPO)), target
    assert {"pyproject.toml", "edge", "export", "README.md"} <= set(listing)
    assert not {".git", ".ci-venvs", ".venv", "build"} & set(listing)
    assert not list(tmp_path.glob("fastsam-edge-src.*"))  # removed at exit
    assert sorted(p.name for p in REPO.iterdir()) == before
