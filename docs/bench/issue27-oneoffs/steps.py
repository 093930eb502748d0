import sys, json, time, gc
bundle, image_path, conf = sys.argv[1], sys.argv[2], float(sys.argv[3])
import numpy as np
from edge.io import read_image
from edge.segmenter import Segmenter
from edge.prompts import TextPrompt
def st(tag):
    d = {l.split(':')[0]: int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith(("VmHWM", "VmRSS"))}
    print(f"{tag:32s} rss {d['VmRSS']:4d} hwm {d['VmHWM']:4d}", flush=True)
st("start")
img = read_image(image_path)
seg = Segmenter.load(bundle, precision="int8", threads=2); st("detector loaded")
dets = seg.detect(img, conf=conf); r = seg.select(dets); st(f"everything ({len(r)} masks)")
enc = seg.text_encoder(); clip = enc.encoder; st("clip encoder (lazy)")
from edge.session import create_session
s = create_session(clip.text_path, threads=2, arena=False); st("text session created")
from edge.clip import encode_tokens
e = encode_tokens(s, clip.tokenizer, ["a red circle"]); st("text encoded")
del s; gc.collect(); st("text session dropped")
import ctypes
ctypes.CDLL("libc.so.6").malloc_trim(0); st("malloc_trim")
d = clip._dense(); st("dense session created")
from edge.textmatch import dense_text_matches
m = dense_text_matches(dets, img, enc, e, 10, "reference", None); st("dense map + 10 crops")
