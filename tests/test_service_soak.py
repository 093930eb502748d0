"""The CI soak: 300 small frames through the whole service; RSS and file handles stay flat.

The long soak is ``scripts/soak.py --duration ...``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


def _soak_module():
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_soak_300_frames(tmp_path, demo_bundle):
    soak = _soak_module()
    res = soak.run_soak(
        tmp_path / "out",
        frames=300,
        warmup_frames=50,
        width=160,
        height=120,
        max_results=50,
        threads=1,  # no spinning onnxruntime thread pool on a shared CI machine
    )
    print(res)  # shown with -s / in the JUnit report on failure
    assert res["frames"] == 300 and res["written"] == 300
    assert res["errors"] == 0 and res["dropped"] == 0
    assert res["rss_growth_pct"] <= 5.0, res
    assert res["fds_end"] <= res["fds_warm"], res  # no leaked file handles
    kept = [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]
    assert len(kept) == 50  # retention ran throughout
