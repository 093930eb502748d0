import sys, time, ctypes, json
import numpy as np
import onnxruntime as ort
path, variant = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None)
def st():
    d = {l.split(':')[0]: int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith(("VmHWM", "VmRSS"))}
    return d["VmRSS"], d["VmHWM"]
arena = variant != "noarena"
o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1
o.enable_cpu_mem_arena = arena; o.enable_mem_pattern = arena and "nopattern" not in variant
o.add_session_config_entry("session.intra_op.allow_spinning", "0")
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
libc.malloc_trim(0); open("/proc/self/clear_refs", "w").write("5")
r0, _ = st()
ro = ort.RunOptions()
if "shrink" in variant: ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
x = np.random.default_rng(0).standard_normal((1, 3, 480, 640)).astype(np.float32)
c = np.random.default_rng(0).standard_normal((2, 3, 256, 256)).astype(np.float32)
td, tc = [], []
for r in range(4):
    a = time.perf_counter(); s.run(None, {"pixels": x}, ro); b = time.perf_counter()
    for _ in range(3): s.run(None, {"pixels": c}, ro)
    e = time.perf_counter()
    if "trim" in variant: libc.malloc_trim(0)
    td.append(b - a); tc.append((e - b) / 3)
r1, h1 = st()
print(variant, json.dumps({"dense_ms": round(1e3 * float(np.median(td[1:]))), "crop2_ms": round(1e3 * float(np.median(tc[1:]))), "peak_over_kept": h1 - r0, "rss_after_over_kept": r1 - r0}))
