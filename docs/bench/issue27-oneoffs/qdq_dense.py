"""Side experiment: static QDQ int8 of the MobileCLIP2-S0 dense tower (issue 27), time + cosine."""
import sys, time, json
from pathlib import Path
import numpy as np
import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static, CalibrationMethod
from onnxruntime.quantization.shape_inference import quant_pre_process
sys.path.insert(0, "/work/wt-27")
from edge.session import create_session
from edge.clip import ClipEncoder
from edge.bundle import read_manifest
from edge.demo.scenes import generate_scene
from edge.prefilter import candidates_only

bundle = Path(sys.argv[1]); out = Path(sys.argv[2]); out.mkdir(exist_ok=True)
ops = sys.argv[3].split(",") if len(sys.argv) > 3 else ["Conv"]
enc = ClipEncoder.load(bundle, read_manifest(bundle), "fp32", threads=2)
fp32 = bundle / "clip-dense.fp32.onnx"
# calibration: mask crops and dense-map inputs of demo scenes
from export.clip import demo_crops
crops = demo_crops((1_700_002, 1_700_003, 1_700_004))
px = enc.preprocess_crops(crops)
cal = [px[i:i+2] for i in range(0, min(len(px), 16), 2)]
for s in range(4):
    sc = generate_scene(2_000_000 + s, 640, 480)
    cal.append(enc.dense_input(np.ascontiguousarray(sc.image[:, :, ::-1]))[0])
class R:
    def __init__(s): s.it = iter(cal)
    def __len__(s): return len(cal)
    def set_range(s, start_index, end_index): s.it = iter(cal[start_index:end_index])
    def get_next(s):
        x = next(s.it, None); return None if x is None else {"pixels": x}
prep = out / "prep.onnx"
if not prep.exists():
    quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
tag = "-".join(ops)
q = out / f"dense-qdq-{tag}.onnx"
t0 = time.time()
quantize_static(str(prep), str(q), R(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
    weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=ops, calibrate_method=CalibrationMethod.MinMax,
    extra_options={"WeightSymmetric": True, "CalibStridedMinMax": 1})
print("quantized", time.time() - t0, "s", q.stat().st_size / 1e6, "MB", flush=True)
models = {"fp32": fp32, "dyn-int8": bundle / "clip-dense.int8.onnx", f"qdq-{tag}": q}
sess = {k: create_session(v, threads=2) for k, v in models.items()}
vcrops = enc.preprocess_crops(demo_crops((1_700_010, 1_700_011)))[:12]
sc = generate_scene(2_100_000, 640, 480)
dense_in = enc.dense_input(np.ascontiguousarray(sc.image[:, :, ::-1]))[0]
res = {}
ref = None
for k, s in sess.items():
    emb = np.concatenate([s.run(None, {"pixels": vcrops[i:i+2]})[0].mean(axis=(2, 3)) for i in range(0, len(vcrops), 2)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    dm = s.run(None, {"pixels": dense_in})[0]
    if ref is None: ref = (emb, dm)
    cos = float((emb * ref[0]).sum(1).min())
    a = dm.reshape(dm.shape[1], -1).T; b = ref[1].reshape(dm.shape[1], -1).T
    dcos = float(((a*b).sum(1) / np.linalg.norm(a,axis=1) / np.linalg.norm(b,axis=1)).min())
    res[k] = {"crop_cos_min": round(cos, 5), "dense_cos_min": round(dcos, 5)}
x2 = vcrops[:2]
for rnd in range(3):
    for k, s in sess.items():
        t = time.perf_counter(); s.run(None, {"pixels": x2}); c = (time.perf_counter() - t) * 1e3
        t = time.perf_counter(); s.run(None, {"pixels": dense_in}); d = (time.perf_counter() - t) * 1e3
        res[k].setdefault("crop2_ms", []).append(round(c, 1)); res[k].setdefault("dense_ms", []).append(round(d, 1))
print(json.dumps(res, indent=1))
