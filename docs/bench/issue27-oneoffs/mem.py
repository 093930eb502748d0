"""Peak RSS of segment + text prompt with knobs (issue 27 side measurement)."""
import sys, json, time
bundle, image_path, conf, arena, keep = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1"
from edge.io import read_image
from edge.segmenter import Segmenter
from edge.prompts import TextPrompt
import edge.clip as ec
orig = ec.ClipEncoder.load.__func__
def load(cls, *a, **k):
    k["transient"] = arena
    return orig(cls, *a, **k)
ec.ClipEncoder.load = classmethod(load)
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
img = read_image(image_path)
seg = Segmenter.load(bundle, precision="int8", threads=2)
seg.clip_keep_text = keep
out = {"arena": arena, "keep_text": keep}
r = seg.segment(img, conf=conf); out["masks"] = len(r); out["everything_hwm"] = round(hwm(), 1)
t = time.perf_counter()
r = seg.segment(img, conf=conf, prompt=TextPrompt("a red circle"))
out["text_ms"] = round((time.perf_counter() - t) * 1e3); out["timings"] = {k: round(v) for k, v in r.timings.items()}
out["text_hwm"] = round(hwm(), 1); out["rss_after"] = round(rss(), 1)
for w in ("a blue square", "a green star"):
    seg.segment(img, conf=conf, prompt=TextPrompt(w))
out["three_words_hwm"] = round(hwm(), 1); out["rss_after3"] = round(rss(), 1)
print(json.dumps(out))
