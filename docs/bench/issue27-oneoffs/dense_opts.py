import sys, json, time, gc, ctypes
import numpy as np
import onnxruntime as ort
path, variant = sys.argv[1], sys.argv[2]
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) // 1024
x = np.random.default_rng(0).standard_normal((1, 3, 480, 640)).astype(np.float32)
c = np.random.default_rng(0).standard_normal((2, 3, 256, 256)).astype(np.float32)
r0 = rss()
o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1
o.enable_cpu_mem_arena = False; o.enable_mem_pattern = False
o.add_session_config_entry("session.intra_op.allow_spinning", "0")
if "noprepack" in variant: o.add_session_config_entry("session.disable_prepacking", "1")
if "basic" in variant: o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
if "ext" in variant: o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
t = time.perf_counter(); s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]); load = time.perf_counter() - t
r1 = rss(); h1 = hwm()
ctypes.CDLL("libc.so.6").malloc_trim(0); r1t = rss()
ts, tc = [], []
for _ in range(3):
    t = time.perf_counter(); s.run(None, {"pixels": x}); ts.append(time.perf_counter() - t)
    t = time.perf_counter(); s.run(None, {"pixels": c}); tc.append(time.perf_counter() - t)
print(json.dumps({"variant": variant, "load_s": round(load, 2), "session_mib": r1 - r0, "hwm_load": h1 - r0, "after_trim": r1t - r0, "run_hwm_over_start": hwm() - r0, "dense_ms": round(1e3 * min(ts)), "crop2_ms": round(1e3 * min(tc))}))
