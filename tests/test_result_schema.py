"""Tests for the result JSON schema (edge.result_schema)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from edge.result_schema import (
    RESULT_SCHEMA_VERSION,
    add_encodings,
    bundle_facts,
    result_to_dict,
)
from edge.types import MaskCrop, Masks

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _result():
    rng = np.random.default_rng(0)
    a = rng.random((6, 9)) < 0.6
    b = np.ones((4, 4), bool)
    return Masks(
        xyxy=np.array([[3, 2, 12, 8], [0, 16, 4, 20]], np.float32),
        confidence=np.array([0.91234567, 0.5], np.float32),
        crops=(MaskCrop(a, 3, 2), MaskCrop(b, 0, 16)),
        image_hw=(20, 13),
        timings={"infer": 1.23456},
    )


@pytest.mark.parametrize("encodings", [True, False])
def test_result_to_dict_fields(encodings):
    result = _result()
    doc = result_to_dict(result, frame_id=7, trigger="http", encodings=encodings)
    json.dumps(doc)  # JSON-able
    assert doc["schema_version"] == RESULT_SCHEMA_VERSION
    assert doc["image"] == {"width": 13, "height": 20}
    assert doc["num_masks"] == 2 and [m["id"] for m in doc["masks"]] == [0, 1]
    first = doc["masks"][0]
    assert first["score"] == round(float(np.float32(0.91234567)), 6)
    assert first["bbox_xyxy"] == [3.0, 2.0, 12.0, 8.0]
    assert first["area"] == int(result.crops[0].data.sum())
    if not encodings:
        assert all("rle" not in m and "polygons" not in m for m in doc["masks"])
        return
    for m, dense in zip(doc["masks"], result.mask, strict=True):
        np.testing.assert_array_equal(mask_utils.decode(m["rle"]).astype(bool), dense)
        assert m["polygons"]


def test_add_encodings_completes_a_summary_doc():
    result = _result()
    full = result_to_dict(result, frame_id=1)
    lazy = result_to_dict(result, frame_id=1, encodings=False)
    add_encodings(lazy, result)
    for a, b in zip(lazy["masks"], full["masks"], strict=True):
        assert a == b
    with pytest.raises(ValueError, match="1 given"):
        add_encodings(result_to_dict(result, encodings=False), result[:1])


def test_bundle_facts_of_a_bundle_segmenter_and_of_another_one(demo_bundle):
    from types import SimpleNamespace

    from edge.bundle import read_manifest

    m = read_manifest(demo_bundle)
    for precision in m.precisions:
        seg = SimpleNamespace(manifest=m, precision=precision)
        facts = bundle_facts(seg)
        assert facts == {
            "name": m.name,
            "sha256": m.files[m.detector_file(precision)].sha256,
            "precision": precision,
        }

    class Embedded:
        def segment(self, image):  # noqa: ANN001, ANN201
            return image

    assert bundle_facts(Embedded()) == {"name": "Embedded"}
    assert bundle_facts(SimpleNamespace(manifest={"name": "x"}, precision="fp32")) == {
        "name": "SimpleNamespace"
    }


def test_track_id_per_mask_only_for_tracked_results():
    import numpy as np

    from edge.result_schema import result_to_dict
    from edge.types import MaskCrop, Masks

    crops = (MaskCrop(np.ones((2, 2), bool), 0, 0), MaskCrop(np.ones((2, 2), bool), 4, 4))
    xyxy = np.array([[0, 0, 2, 2], [4, 4, 6, 6]], np.float32)
    plain = Masks(xyxy, np.array([0.9, 0.8], np.float32), crops, (8, 8))
    assert all("track_id" not in m for m in result_to_dict(plain, encodings=False)["masks"])
    tracked = Masks(xyxy, plain.confidence, crops, (8, 8), metadata={"tracking": True},
                    track_id=np.array([3, -1]))  # fmt: skip
    doc = result_to_dict(tracked, encodings=False)
    assert [m["track_id"] for m in doc["masks"]] == [3, -1]
    json.dumps(doc)  # plain ints
