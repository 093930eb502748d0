"""edge.bench.system: cpuinfo parsing, throttling bits, board state from a fake sysfs."""

from __future__ import annotations

import pytest

from edge.bench.system import board_state, cpu_info, decode_throttled, machine_facts, peak_rss_mb

PI5 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

Revision\t: d04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
X86 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse avx2 avx512f avx512_vnni
"""


@pytest.mark.parametrize(
    ("text", "cpu", "flags"),
    [
        (PI5, "Raspberry Pi 5 Model B Rev 1.0 (CPU part 0xd0b)", ["asimddp", "asimd"]),
        (X86, "AMD EPYC 9B14", ["avx512_vnni", "avx512f", "avx2"]),
    ],
)
def test_cpu_info(text, cpu, flags):
    assert cpu_info(text) == {"cpu": cpu, "flags": flags}


@pytest.mark.parametrize(
    ("value", "on"),
    [
        (0x0, set()),
        (0x50005, {"under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"}),
        (0x80000, {"soft_temp_limit_occurred"}),
    ],
)
def test_decode_throttled(value, on):
    flags = decode_throttled(value)
    assert {k for k, v in flags.items() if v} == on


def test_board_state_reads_thermal_zones_and_cpufreq(tmp_path):
    zone = tmp_path / "class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("61250\n")
    (zone / "type").write_text("cpu-thermal\n")
    for cpu, cur in ((0, 2400000), (1, 1500000)):
        d = tmp_path / f"devices/system/cpu/cpu{cpu}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_cur_freq").write_text(f"{cur}\n")
        (d / "cpuinfo_max_freq").write_text("2400000\n")
        (d / "scaling_governor").write_text("ondemand\n")
    state = board_state(tmp_path)
    assert state["temperature_c"] == {"cpu-thermal": 61.25}
    assert state["cpu_mhz"] == {"cur": [2400.0, 1500.0], "max": [2400.0, 2400.0]}
    assert state["governor"] == "ondemand"


def test_board_state_without_sources(tmp_path):
    assert board_state(tmp_path) == {
        "temperature_c": {},
        "cpu_mhz": {"cur": [], "max": []},
        "governor": None,
        "throttled": None,
    }


def test_machine_facts_and_rss():
    facts = machine_facts()
    assert facts["cores"] >= 1 and "CPUExecutionProvider" in facts["providers"]
    assert facts["emulated"] is False
    assert 10 < peak_rss_mb() < 100_000
