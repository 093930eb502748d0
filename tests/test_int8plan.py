"""export.int8plan: held-out split, blocks, and the precision-plan search on the demo detector."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.export

PROTO = "/model.22/proto"


def _scenes(n, size=320, start=1_500_000):
    from edge.demo.scenes import generate_scene
    from export.quantize import CalibrationSet

    scenes = [generate_scene(start + i, size, size) for i in range(n)]
    return CalibrationSet([s.image for s in scenes], "scenes", [s.masks for s in scenes])


def test_split_holds_out_every_fourth_image_with_its_ground_truth():
    from export.int8plan import split_held_out

    calib = _scenes(8, size=64)
    cal, held = split_held_out(calib, 4)
    assert len(cal.images) == 6 and len(held.images) == 2
    assert held.images[0] is calib.images[3] and held.images[1] is calib.images[7]
    assert held.gt_masks[1] is calib.gt_masks[7] and cal.gt_masks[3] is calib.gt_masks[4]
    assert not any(img is h for img in cal.images for h in held.images)  # never calibrated on
    with pytest.raises(ValueError, match="--calib-count"):
        split_held_out(_scenes(3, size=64), 4)


def _prepped(demo_bundle, tmp_path):
    from export.quantize import prepare_model

    return prepare_model(demo_bundle / "fastsam.fp32.onnx", tmp_path / "prepped.onnx")


def _float_convs(path):
    """Conv name -> whether its weight is a float initializer (not a DequantizeLinear output)."""
    import onnx

    g = onnx.load(str(path)).graph
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: n.input[1] not in dq_out for n in g.node if n.op_type == "Conv"}


def test_blocks_and_a_float_block_really_is_float(demo_bundle, tmp_path):
    import onnx

    from export.int8plan import blocks_of
    from export.quantize import float_nodes, quantize_prepared

    prepped = _prepped(demo_bundle, tmp_path)
    model = onnx.load(str(prepped))
    skip = set(float_nodes(model, ("cv3", "cv4")))
    blocks = blocks_of(model, skip)
    assert {"/model.0", "/model.21", PROTO, "/model.22/cv4.0", "/model.22/cv2.2"} <= set(blocks)
    assert not skip & {n for v in blocks.values() for n in v}  # already-float nodes: no block
    out = tmp_path / "q.onnx"
    quantize_prepared(prepped, out, _scenes(2).images, (320, 320), extra_float=blocks[PROTO])
    convs = _float_convs(out)
    proto = {k: v for k, v in convs.items() if k.startswith(PROTO + "/")}
    assert proto and all(proto.values())  # every conv of the block keeps float weights
    assert not any(v for k, v in convs.items() if k.startswith("/model.21/"))  # others int8


class _FakeEval:
    """Scores a candidate by the file itself: good only when the proto block is float."""

    recall_basis = "ground truth"

    def __init__(self, n=2, bad=0.9):
        self.calls, self.n, self.bad = [], n, bad

    def __len__(self):
        return self.n

    def measure(self, path, kernels="host", timed=False, limit=None):
        convs = _float_convs(path)
        good = all(v for k, v in convs.items() if k.startswith(PROTO + "/"))
        self.calls.append((path.name, kernels, timed, limit))
        images = self.n if limit is None else min(limit, self.n)
        rep = {"images": images, "kernels": kernels,
               "mean_iou_fp32_to_int8": 0.99 if good else self.bad,
               "mean_iou_int8_to_fp32": 0.99 if good else self.bad + 0.03,
               "recall_loss": 0.0}  # fmt: skip
        if timed:
            rep.update(infer_ms_fp32=10.0, infer_ms_int8=5.0 if good else 4.0, speedup=2.0)
        return rep

    def measure_variants(self, paths, base, kernels, limit):
        for path in paths:
            yield self.measure(path, kernels, limit=limit)


def test_search_keeps_the_sensitive_block_float(demo_bundle, tmp_path):
    from edge.bundle import Int8Plan
    from export.int8plan import GraphOps, PlanOptions, choose_plan
    from export.quantize import QuantConfig, float_nodes, prepare_model, quantize_prepared

    work = tmp_path / "work"
    work.mkdir()
    fake = _FakeEval()
    opts = PlanOptions(fixes=(), blocks=("/model.21", PROTO), max_float_blocks=2)
    result = choose_plan(
        demo_bundle / "fastsam.fp32.onnx", work, _scenes(2), list, fake, (320, 320), False,
        QuantConfig(num_images=2), opts, GraphOps(prepare_model, float_nodes, quantize_prepared),
    )  # fmt: skip
    plan = result.plan
    assert plan.meets_target and [b.block for b in plan.float_blocks] == [PROTO]
    assert plan.sensitivity[PROTO] > 0 >= plan.sensitivity["/model.21"]
    assert [t.name for t in plan.tried] == ["fixed", f"fixed + float {PROTO}"]
    assert not plan.tried[0].meets_target and plan.tried[1].meets_target
    assert plan.float_blocks[0].speed_cost_ms == 1.0  # 5.0 ms with the block float vs 4.0
    assert result.recipe["float_blocks"] == [PROTO]
    proto = {k: v for k, v in _float_convs(result.path).items() if k.startswith(PROTO + "/")}
    assert proto and all(proto.values())
    assert Int8Plan.from_json(plan.to_json()) == plan
    # the sensitivity pass (base, then one per block) is untimed; the fixed recipe and the plan
    # are timed against fp32
    assert [c[2] for c in fake.calls] == [True, False, False, False, True]
    assert all(c[3] in (None, 4) for c in fake.calls)  # 2 images: nothing to screen


@pytest.mark.parametrize(
    ("worst", "measured", "total", "hopeless"),
    [
        (0.879, 4, 16, True),  # 4 * 0.879 + 12 * 1 < 16 * 0.97
        (0.881, 4, 16, False),  # the other 12 at 1.0 would still reach 0.97
        (0.5, 16, 16, False),  # measured in full: the verdict is meets(), not screening
        (0.95, 8, 16, False),  # 8 * 0.95 + 8 * 1 = 16 * 0.975
        (0.93, 8, 16, True),  # with a 0.99 target: bound 0.98
    ],
)
def test_cannot_reach_is_an_exact_bound(worst, measured, total, hopeless):
    from edge.bundle import Int8Target
    from export.int8plan import cannot_reach

    target = Int8Target(0.99 if worst == 0.93 else 0.97, 0.01, 1.3)
    rep = {"images": measured, "mean_iou_fp32_to_int8": worst, "mean_iou_int8_to_fp32": 1.0}
    assert cannot_reach(rep, total, target) is hopeless


def test_search_screens_out_hopeless_candidates(demo_bundle, tmp_path):
    from export.int8plan import GraphOps, PlanOptions, choose_plan
    from export.quantize import QuantConfig, float_nodes, prepare_model, quantize_prepared

    work = tmp_path / "work"
    work.mkdir()
    fake = _FakeEval(n=16, bad=0.5)
    opts = PlanOptions(fixes=("percentile",), blocks=("/model.21", PROTO), max_float_blocks=2)
    result = choose_plan(
        demo_bundle / "fastsam.fp32.onnx", work, _scenes(2), list, fake, (320, 320), False,
        QuantConfig(num_images=2), opts, GraphOps(prepare_model, float_nodes, quantize_prepared),
    )  # fmt: skip
    plan = result.plan
    assert plan.meets_target and [b.block for b in plan.float_blocks] == [PROTO]
    by_name = {t.name: t for t in plan.tried}
    # the fixed recipe is measured in full (the side-by-side); percentile is screened out on
    # the first 4 images: never timed, never measured on all 16
    assert by_name["fixed"].images is None and by_name["percentile"].images == 4
    assert not by_name["percentile"].meets_target and "screening" in plan.notes
    assert [(c[2], c[3]) for c in fake.calls] == [
        (True, None),  # fixed, in full and timed
        (False, 4),  # percentile: screened out
        (False, 4),  # fixed on the first 4 images: the same basis as percentile's
        (False, 4), (False, 4),  # sensitivity: one per block
        (False, 4), (True, None),  # the plan with the proto block float: passes the screen
    ]  # fmt: skip


def test_impossible_target_is_refused_naming_it(demo_bundle, tmp_path, capsys):
    from edge.bundle import Int8Target, QuantSection, Thresholds
    from export.int8plan import PlanOptions
    from export.quantize import QuantConfig, quantize_detector

    shutil.copy(demo_bundle / "fastsam.fp32.onnx", tmp_path / "fastsam.fp32.onnx")
    target = Int8Target(min_iou=0.97, max_recall_loss=0.01, min_speedup=1000.0)
    opts = PlanOptions(target=target, fixes=(), blocks=(PROTO,), speed_floor=True)
    section = quantize_detector(
        tmp_path, (320, 320), False, Thresholds(), config=QuantConfig(num_images=4),
        threads=1, plan=opts,
    )  # fmt: skip
    assert not section.ok and not (tmp_path / "fastsam.int8.onnx").exists()
    assert "mean IoU >= 0.97 both ways, recall loss <= 1.0 pt" in section.status
    assert ">= 1000x fp32" in section.status and "REFUSED" in capsys.readouterr().out
    assert section.held_out.images == 2 and section.held_out.calibration_images == 2
    assert section.held_out.recall_basis == "ground truth"
    assert section.verify["held_out"] is True and section.verify["images"] == 2
    assert section.plan.tried[0].name == "fixed" and not section.plan.meets_target
    assert "speed floor" in section.plan.notes
    assert QuantSection.from_json(section.to_json()) == section


def test_no_speed_floor_where_the_host_kernels_are_not_a_pis(demo_bundle, tmp_path):
    from edge.bundle import Int8Plan, Int8Target
    from export.int8plan import GraphOps, PlanOptions, choose_plan
    from export.quantize import QuantConfig, float_nodes, prepare_model, quantize_prepared

    work = tmp_path / "work"
    work.mkdir()
    fake = _FakeEval()
    # an x86 host without VNNI measures agreement with the reference kernels: its int8 speed
    # (any speed-up, here an impossible 1000x floor) is no criterion, and nothing is timed
    target = Int8Target(0.97, 0.01, 1000.0)
    opts = PlanOptions(target=target, fixes=(), blocks=("/model.21", PROTO), max_float_blocks=2)
    result = choose_plan(
        demo_bundle / "fastsam.fp32.onnx", work, _scenes(2), list, fake, (320, 320), False,
        QuantConfig(num_images=2), opts, GraphOps(prepare_model, float_nodes, quantize_prepared),
        kernels="reference",
    )  # fmt: skip
    plan = result.plan
    assert not plan.speed_floor and "not applied" in plan.notes["speed floor"]
    assert plan.meets_target and [b.block for b in plan.float_blocks] == [PROTO]
    assert not any(c[2] for c in fake.calls)  # untimed
    assert plan.float_blocks[0].speed_cost_ms is None
    assert Int8Plan.from_json(plan.to_json()) == plan


def test_held_out_eval_measures_against_cached_fp32(demo_bundle):
    from edge.bundle import Thresholds
    from export.int8plan import HeldOutEval

    ev = HeldOutEval(demo_bundle / "fastsam.fp32.onnx", _scenes(2), (320, 320), False,
                     Thresholds(), threads=1)  # fmt: skip
    same = ev.measure(demo_bundle / "fastsam.fp32.onnx", "host", timed=True)
    assert same["mean_iou_fp32_to_int8"] == same["mean_iou_int8_to_fp32"] == 1.0
    assert same["recall_of_fp32"] == 1.0 and same["recall_loss"] == 0.0
    assert same["held_out"] is True and same["speedup"] > 0
    q = ev.measure(demo_bundle / "fastsam.int8.onnx", "reference")
    assert 0.9 <= min(q["mean_iou_fp32_to_int8"], q["mean_iou_int8_to_fp32"]) <= 1.0
    assert "speedup" not in q and np.isfinite(q["recall_loss"])
    assert ev.measure(demo_bundle / "fastsam.int8.onnx", "host", limit=1)["images"] == 1


def test_held_out_eval_runs_no_image_twice_for_one_file(demo_bundle, monkeypatch):
    from edge.bundle import Thresholds
    from export.int8plan import HeldOutEval

    fp32, int8 = demo_bundle / "fastsam.fp32.onnx", demo_bundle / "fastsam.int8.onnx"
    ev = HeldOutEval(fp32, _scenes(3), (320, 320), False, Thresholds(), threads=1)
    runs = []
    run = ev._run
    monkeypatch.setattr(ev, "_run", lambda session, k: runs.append(k) or run(session, k))

    def measured(*args, **kwargs):
        runs.clear()
        return ev.measure(int8, *args, **kwargs), list(runs)

    first, ran = measured("reference", limit=2)
    assert ran == [0, 1]
    full, ran = measured("reference")
    assert ran == [2]  # the screened images are not run again
    again, ran = measured("reference", limit=2)
    assert ran == [] and again == first
    assert measured("host", limit=1)[1] == [0]  # other kernels: measured afresh
    timed, ran = measured("reference", timed=True)
    assert sorted(ran) == [0, 0, 1, 1, 2, 2]  # timed: fp32 and int8 on every image
    untimed = {k: v for k, v in timed.items() if k not in ("infer_ms_fp32", "infer_ms_int8")}
    assert untimed == {**full, "speedup": timed["speedup"]}
    fresh = HeldOutEval(fp32, _scenes(3), (320, 320), False, Thresholds(), threads=1)
    assert fresh.measure(int8, "reference") == full


def test_merged_ranges_equal_one_minmax_calibration(demo_bundle, tmp_path):
    from helpers import assert_same_ranges

    from export.int8plan import merged_ranges
    from export.quantize import QuantConfig, calibrate_ranges, quantize_prepared

    prepped = _prepped(demo_bundle, tmp_path)
    images = _scenes(6).images
    calibrate_ranges(prepped, images[:4], (320, 320), False, {"minmax": tmp_path / "a.json"})
    calibrate_ranges(prepped, images[4:], (320, 320), False, {"minmax": tmp_path / "b.json"})
    merged_ranges(tmp_path / "a.json", tmp_path / "b.json", tmp_path / "ab.json")
    quantize_prepared(prepped, tmp_path / "q.onnx", images, (320, 320),
                      config=QuantConfig(num_images=6), cache=tmp_path / "all.json")  # fmt: skip
    assert_same_ranges(tmp_path / "ab.json", tmp_path / "all.json")
    calibrate_ranges(prepped, images[:2], (320, 320), False, {"entropy": tmp_path / "e.json"})
    with pytest.raises(ValueError, match="not MinMax"):
        merged_ranges(tmp_path / "a.json", tmp_path / "e.json", tmp_path / "x.json")


def test_search_calibrating_apart_keeps_plan_and_ranges(demo_bundle, tmp_path):
    """The search with calibration passes of its own (histograms shared, more images merged)
    tries the same candidates from the same ranges as with each calibrated in its quantize
    step, and calibrates the histograms once."""
    from helpers import assert_same_ranges

    from export.int8plan import GraphOps, PlanOptions, choose_plan
    from export.quantize import (
        QuantConfig,
        calibrate_ranges,
        float_nodes,
        prepare_model,
        quantize_prepared,
    )

    calls = []

    def calibrate(prepped, images, imgsz, dynamic, caches):
        calls.append((sorted(caches), len(images)))
        calibrate_ranges(prepped, images, imgsz, dynamic, caches)

    plans = {}
    for name, ops in [
        ("apart", GraphOps(prepare_model, float_nodes, quantize_prepared, calibrate)),
        ("in quantize", GraphOps(prepare_model, float_nodes, quantize_prepared)),
    ]:
        work = tmp_path / name.replace(" ", "-")
        work.mkdir()
        opts = PlanOptions(blocks=("/model.21", PROTO), max_float_blocks=2)
        plans[name] = choose_plan(
            demo_bundle / "fastsam.fp32.onnx", work, _scenes(2), lambda: _scenes(4).images[2:],
            _FakeEval(), (320, 320), False, QuantConfig(num_images=2), opts, ops,
        ).plan  # fmt: skip
    apart, alone = plans["apart"], plans["in quantize"]
    assert calls == [(["entropy", "percentile"], 2), (["minmax"], 2)]
    assert [t.name for t in apart.tried] == [t.name for t in alone.tried] == [
        "fixed", "percentile", "mixed (per tensor)", "entropy", "more images",
        f"fixed + float {PROTO}",
    ]  # fmt: skip
    assert apart.tried == alone.tried and apart.sensitivity == alone.sensitivity
    assert "one pass" in apart.notes["histograms"] and "histograms" not in alone.notes
    for cache in ("minmax", "percentile", "entropy", "more-images"):
        assert_same_ranges(tmp_path / "apart" / f"ranges-{cache}.json",
                           tmp_path / "in-quantize" / f"ranges-{cache}.json")  # fmt: skip
    assert_same_ranges(tmp_path / "apart" / "m.json", tmp_path / "in-quantize" / "m.json")


@pytest.mark.parametrize("kernels", ["reference", "host"])
def test_block_candidates_measured_downstream_of_the_block(demo_bundle, tmp_path, monkeypatch,
                                                            caplog, kernels):  # fmt: skip
    """With the reference kernels a block's candidate runs only from the block on, fed the
    plan it is ranked against: the same reports as measuring each file in full; a part that
    computed other numbers (here: one that leaves the detections to the base) is caught."""
    import onnx

    import export.downstream as ds
    from edge.bundle import Thresholds
    from export.int8plan import HeldOutEval, blocks_of
    from export.quantize import QuantConfig, float_nodes, quantize_prepared

    prepped = _prepped(demo_bundle, tmp_path)
    model = onnx.load(str(prepped))
    blocks = blocks_of(model, set(float_nodes(model, ("cv3", "cv4"))))
    calib, cfg, cache = _scenes(2).images, QuantConfig(num_images=2), tmp_path / "ranges.json"
    base = tmp_path / "base.onnx"
    quantize_prepared(prepped, base, calib, (320, 320), config=cfg, cache=cache)
    names = ["/model.2", "/model.12", "/model.19", PROTO, "/model.22/cv2.1"]
    files = []
    for b in names:
        files.append(tmp_path / f"{b.strip('/').replace('/', '-')}.onnx")
        quantize_prepared(prepped, files[-1], calib, (320, 320), config=cfg, cache=cache,
                          extra_float=blocks[b])  # fmt: skip
    held = _scenes(3, start=1_600_000)
    full = HeldOutEval(demo_bundle / "fastsam.fp32.onnx", held, (320, 320), False,
                       Thresholds(conf=0.1), threads=1)  # fmt: skip
    expected = [full.measure(f, kernels, limit=2) for f in files]
    assert len({r["mean_iou_fp32_to_int8"] for r in expected}) > 1  # the blocks differ
    ev = HeldOutEval(demo_bundle / "fastsam.fp32.onnx", held, (320, 320), False,
                     Thresholds(conf=0.1), threads=1)  # fmt: skip
    runs = []
    run = ev._run
    monkeypatch.setattr(ev, "_run", lambda session, k: runs.append(k) or run(session, k))
    assert list(ev.measure_variants(files, base, kernels, 2)) == expected
    assert len(runs) == (0 if kernels == "reference" else 2 * len(files))  # whole graphs run
    runs.clear()
    assert ev.measure(files[0], kernels, limit=2) == expected[0] and not runs  # kept
    if kernels == "host":
        return
    # a wrong part: the detections output taken from the base though the block changes it
    affected = ds.affected_nodes

    def wrong(base_model, variant):
        out0 = variant.graph.output[0].name
        return {n.name for n in variant.graph.node if out0 not in n.output} & affected(
            base_model, variant)  # fmt: skip

    monkeypatch.setattr(ds, "affected_nodes", wrong)
    ev = HeldOutEval(demo_bundle / "fastsam.fp32.onnx", held, (320, 320), False,
                     Thresholds(conf=0.1), threads=1)  # fmt: skip
    with caplog.at_level("WARNING"):
        assert list(ev.measure_variants(files, base, kernels, 2)) == expected
    assert "every candidate is measured in full" in caplog.text
