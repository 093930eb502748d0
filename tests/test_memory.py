"""Peak memory per bundle: the ``memory`` section of bundle.json and its measurement."""

from __future__ import annotations

import json
import shutil

import pytest

from edge.bundle import MemoryProfile, read_manifest, verify_file
from edge.errors import BundleError
from export.memory import format_profile, measure_peak_mib, record_memory

GOOD = {
    "peak_mib": {"fp32": {"segment": 250.0, "text": 1080.0}, "int8": {"segment": 185.5}},
    "frame_hw": [960, 1280],
    "threads": 2,
    "machine": "aarch64",
    "onnxruntime": "1.32.0",
}


def test_memory_profile_round_trip_and_peaks():
    prof = MemoryProfile.from_dict(GOOD)
    assert MemoryProfile.from_dict(prof.to_dict()) == prof
    assert prof.peak("fp32") == 1080.0 and prof.peak("fp32", text=False) == 250.0
    assert prof.peak("int8") == 185.5 and prof.peak() == 1080.0
    assert prof.peak(None, text=False) == 250.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"peak_mib": {"fp16": {"segment": 1.0}}}, "unknown precision 'fp16'"),
        ({"peak_mib": {"fp32": {"segment": -3}}}, "fp32.segment"),
        ({"peak_mib": {"fp32": {"video": 3}}}, "fp32.video"),
        ({"peak_mib": {"fp32": {"segment": True}}}, "fp32.segment"),
        ({"frame_hw": [960]}, "malformed"),
        ({"threads": "two"}, "malformed"),
    ],
)
def test_memory_profile_rejects_malformed(change, match):
    with pytest.raises(BundleError, match=match):
        MemoryProfile.from_dict({**GOOD, **change})


def test_manifest_reads_and_writes_the_memory_section(demo_bundle, tmp_path):
    m = read_manifest(demo_bundle)
    assert m.memory is not None and set(m.memory.peak_mib) == set(m.precisions)
    assert "memory" not in m.extra and m.to_dict()["memory"] == m.memory.to_dict()
    doc = m.to_dict()
    doc["memory"] = {"peak_mib": "lots"}
    bad = tmp_path / "b"
    shutil.copytree(demo_bundle, bad)
    (bad / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="bundle.json memory"):
        read_manifest(bad)
    del doc["memory"]
    (bad / "bundle.json").write_text(json.dumps(doc))
    assert read_manifest(bad).memory is None  # bundles exported before the measurement


def test_record_memory_detector_only_bundle(detector_only_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(detector_only_bundle, bundle)
    doc = json.loads((bundle / "bundle.json").read_text())
    doc.pop("memory", None)
    (bundle / "bundle.json").write_text(json.dumps(doc))
    prof = record_memory(bundle, frame_hw=(240, 320), threads=1)
    m = read_manifest(bundle)
    assert m.memory == prof and prof.frame_hw == (240, 320) and prof.threads == 1
    for precision in m.precisions:
        row = prof.peak_mib[precision]
        assert set(row) == {"segment"}  # no CLIP: no text figure
        assert 40 < row["segment"] < 2000  # python + numpy + onnxruntime at least
        verify_file(bundle, m, m.detector_file(precision))  # model files untouched
    assert "segment" in format_profile(prof) and "320x240" in format_profile(prof)


def test_measurement_failure_names_the_case(tmp_path):
    with pytest.raises(BundleError, match=r"memory measurement \(fp32, text=False\) failed"):
        measure_peak_mib(tmp_path / "missing", "fp32", frame_hw=(64, 64))


@pytest.mark.export  # text prompts need the text extra (ftfy, regex), which the export env has
def test_record_memory_text_prompt_costs_more(demo_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(demo_bundle, bundle)
    prof = record_memory(bundle, frame_hw=(240, 320), threads=1)
    for precision in read_manifest(bundle).precisions:
        row = prof.peak_mib[precision]
        assert row["text"] > row["segment"]  # the CLIP encoders are loaded on top


def test_committed_demo_bundle_memory_matches_a_fresh_measurement(demo_bundle):
    """The demo bundle's recorded figures are real: a re-measurement lands near them."""
    m = read_manifest(demo_bundle)
    assert m.memory is not None
    h, w = m.memory.frame_hw
    fresh = measure_peak_mib(demo_bundle, "int8", None, (h, w), m.memory.threads)
    recorded = m.memory.peak_mib["int8"]["segment"]
    assert abs(fresh - recorded) < 0.35 * recorded, (fresh, recorded)
