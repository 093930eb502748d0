import time, json, numpy as np, sys
sys.path.insert(0, "/work/wt-27")
from edge.session import create_session
ms = {"fp32": "work/s640-mc2s0/clip-dense.fp32.onnx", "dyn-int8": "work/s640-mc2s0/clip-dense.int8.onnx", "qdq-conv": "work/qdq/dense-qdq-Conv.onnx"}
ss = {k: create_session(v, threads=2) for k, v in ms.items()}
x = np.random.default_rng(0).standard_normal((1, 3, 480, 640)).astype(np.float32)
c = np.random.default_rng(0).standard_normal((2, 3, 256, 256)).astype(np.float32)
t = {k: ([], []) for k in ss}
for r in range(4):
    for k, s in ss.items():
        a = time.perf_counter(); s.run(None, {"pixels": x}); b = time.perf_counter(); s.run(None, {"pixels": c}); e = time.perf_counter()
        if r: t[k][0].append(b - a); t[k][1].append(e - b)
print(json.dumps({k: {"dense_ms": round(1e3 * float(np.median(v[0]))), "crop2_ms": round(1e3 * float(np.median(v[1])))} for k, v in t.items()}))
