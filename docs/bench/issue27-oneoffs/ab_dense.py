import sys, time, ctypes, json
import numpy as np
import onnxruntime as ort
path = sys.argv[1]; thr = int(sys.argv[2])
libc = ctypes.CDLL(None)
if thr: libc.mallopt(-3, thr)
def mk(arena):
    o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1
    o.enable_cpu_mem_arena = arena; o.enable_mem_pattern = arena
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, 480, 640)).astype(np.float32)
c = np.random.default_rng(0).standard_normal((2, 3, 256, 256)).astype(np.float32)
ss = {"arena": mk(True), "noarena": mk(False)}
t = {k: {"dense": [], "crop2": []} for k in ss}
for r in range(4):
    for k, s in ss.items():
        a = time.perf_counter(); s.run(None, {"pixels": x}); b = time.perf_counter(); s.run(None, {"pixels": c}); e = time.perf_counter()
        if r: t[k]["dense"].append(b - a); t[k]["crop2"].append(e - b)
print(thr, json.dumps({k: {m: round(1e3 * float(np.median(v))) for m, v in d.items()} for k, d in t.items()}))
