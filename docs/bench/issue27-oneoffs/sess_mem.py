import sys, json, time, ctypes
import numpy as np
import onnxruntime as ort
path, variant, shape = sys.argv[1], sys.argv[2], sys.argv[3]
libc = ctypes.CDLL("libc.so.6")
def st():
    d = {l.split(':')[0]: int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith(("VmHWM", "VmRSS"))}
    return d["VmRSS"], d["VmHWM"]
def reset():
    libc.malloc_trim(0)
    open("/proc/self/clear_refs", "w").write("5")
o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1
o.enable_cpu_mem_arena = False; o.enable_mem_pattern = False
if "noprepack" in variant: o.add_session_config_entry("session.disable_prepacking", "1")
if "ext" in variant: o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
if shape == "text":
    feed = {"tokens": np.zeros((1, 77), np.int32)}
else:
    h, w = (int(v) for v in shape.split("x"))
    feed = {"pixels": np.zeros((1 if h > 256 else 2, 3, h, w), np.float32)}
reset(); r0, _ = st()
t = time.perf_counter(); s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]); load = time.perf_counter() - t
r1, h1 = st(); reset(); r2, _ = st()
t = time.perf_counter(); s.run(None, feed); run = time.perf_counter() - t
r3, h3 = st(); reset(); r4, _ = st()
print(json.dumps({"file": path.split("/")[-1], "variant": variant, "shape": shape, "load_peak": h1 - r0, "load_rss": r1 - r0, "kept_after_trim": r2 - r0, "run_peak_over_kept": h3 - r2, "after_run_trim": r4 - r0, "load_ms": round(load * 1e3), "run_ms": round(run * 1e3)}))
