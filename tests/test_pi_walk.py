"""The README's Pi section followed line by line in a Debian bookworm root (scripts/pi_walk.sh):
installer as root through sudo, the commands as a login user, the unit verified and its
ExecStart run as the service user, then an upgrade and an uninstall.

Opt-in (root, a Debian mirror, PyPI, minutes): ``FASTSAM_PI_WALK=1 pytest -m pi_walk``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pi_walk

REPO = Path(__file__).resolve().parents[1]


def test_readme_pi_path_in_a_debian_root(tmp_path):
    assert os.geteuid() == 0, "the walk needs root (debootstrap, chroot, mounts)"
    out = tmp_path / "out"
    root = os.environ.get("FASTSAM_PI_WALK_ROOT", str(REPO / "work" / "pi-walk-root"))
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "pi_walk.sh"),
            "--root",
            root,
            "--out",
            str(out),
            "--python",
            sys.executable,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=3600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    walk = json.loads((out / "walk.json").read_text())
    assert walk["ok"] and walk["exposure"] <= 2.0
    done = [s["what"] for s in walk["steps"]]
    spec = importlib.util.spec_from_file_location("pi_path", REPO / "tests" / "test_pi_path.py")
    assert spec is not None and spec.loader is not None
    pi_path = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pi_path)
    commands = pi_path.readme_pi_commands()
    assert [d for d in done if d in commands] == commands  # every README line, in order
    assert "upgrade (installer again)" in done and "uninstall, purge" in done
