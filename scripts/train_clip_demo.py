"""Train a tiny CLIP on the synthetic demo world and add it to the demo bundle.

The demo world (``edge/demo/scenes.py``) has named colours and shapes, so captions such as
``"a red circle"`` are exact. This script

1. renders training scenes (seeds ``0 .. N-1`` only; held-out seeds ``>= 1_000_000`` are never
   touched) and cuts one crop per object exactly as ``edge.textmatch.select_by_text`` does
   (``image[y1:y2, x1:x2] * mask[y1:y2, x1:x2]``, BGR -> RGB, black outside the mask), from the
   GT box and from a slightly jittered box, preprocessed with the runtime's own transform
   (``edge.clip.ClipPreprocess``: shortest side -> 64, centre crop);
2. trains a tiny open_clip model (custom config ``fastsam-demo-clip``, registered with
   ``open_clip.add_model_config``; the real 49,408-token BPE vocabulary and open_clip tokenizer)
   with a multi-positive symmetric contrastive loss (several crops of one caption share a batch);
3. with ``--add-to-bundle DIR``: exports both encoders with ``export.clip.export_clip`` (fp32 +
   dynamic int8, verified against torch), then *prunes the vocabulary inside the text graphs*:
   the 49,408 x W token table becomes a small table of the tokens seen in training plus one UNK
   row (all unseen tokens already share that row in the torch model, so the graphs compute the
   same function), reached through an int32 lookup ``open_clip id -> compact id``. The CLIP files
   and the ``clip`` section are added to ``DIR/bundle.json``; the detector files and every
   other manifest field are left as they are.

Usage::

    nice -n 15 /work/venvs/export/bin/python scripts/train_clip_demo.py \
        --out work/clip-demo --add-to-bundle edge/demo/assets/demo-bundle
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.clip import ClipPreprocess, pil_resize, resized_shortest  # noqa: E402
from edge.demo.scenes import COLORS, SHAPES, generate_scene  # noqa: E402

IMAGE_SIZE = 64
_TEXT_CFG: dict[str, Any] = {
    "context_length": 77,
    "vocab_size": 49408,
    "width": 64,
    "heads": 2,
    "layers": 2,
}
# Two towers: the tiny ViT of the demo bundle, and a MobileCLIP-family proxy whose image tower is
# MobileCLIP-S0 / MobileCLIP2-S0's own FastViT-MCi0 (full depth and width, 64 px crops), with the
# same tiny text transformer. The proxy stands in for the real MobileCLIP towers wherever
# agreement needs trained weights (scripts/text_prefilter.py).
TOWER_CFGS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": (
        "fastsam-demo-clip",
        {
            "embed_dim": 64,
            "quick_gelu": False,
            "vision_cfg": {
                "image_size": IMAGE_SIZE,
                "layers": 3,
                "width": 96,
                "patch_size": 8,
                "head_width": 32,
            },
            "text_cfg": _TEXT_CFG,
        },
    ),
    "mci0": (
        "fastsam-demo-mobileclip",
        {
            "embed_dim": 64,
            "vision_cfg": {
                "timm_model_name": "fastvit_mci0",
                "timm_model_pretrained": False,
                "timm_pool": "avg",
                "timm_proj": None,
                "image_size": IMAGE_SIZE,
            },
            "text_cfg": {**_TEXT_CFG, "no_causal_mask": True},
            "custom_text": True,
        },
    ),
}
MODEL_NAME, MODEL_CFG = TOWER_CFGS["vit"]
TEMPLATES = ("a {c} {s}", "a {c} {s}", "the {c} {s}", "{c} {s}", "a photo of a {c} {s}")
CLASSES = [(c, s) for c in COLORS for s in SHAPES]
TEXT_MIN_AREA = 100  # the runtime's text candidates have area > 100 px


def register_config(tmp: Path) -> None:
    """Register :data:`MODEL_CFG` with open_clip under :data:`MODEL_NAME`."""
    import open_clip

    path = tmp / f"{MODEL_NAME}.json"
    path.write_text(json.dumps(MODEL_CFG, indent=2), encoding="utf-8")
    open_clip.add_model_config(path)


def crop_of(image: np.ndarray, mask: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """``select_by_text``'s reference crop: box region times mask, BGR -> RGB."""
    h, w = mask.shape
    x1, y1, x2, y2 = (int(v) for v in box)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 <= x1 or y2 <= y1:
        return None
    region = image[y1:y2, x1:x2] * mask[y1:y2, x1:x2, None].astype(np.uint8)
    if not region.any():
        return None
    return np.ascontiguousarray(region[:, :, ::-1])


def to_input_uint8(crop: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """The runtime transform's uint8 stage (before /255 and mean/std), (size, size, 3)."""
    h, w = crop.shape[:2]
    nh, nw = resized_shortest(h, w, size)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    if (nh, nw) == (h, w):
        return np.ascontiguousarray(crop[top : top + size, left : left + size])
    return pil_resize(crop, (nh, nw), "bicubic", (top, left, size, size))


def build_dataset(
    n_scenes: int, size_hw: tuple[int, int], seed: int, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S, 3) uint8 RGB inputs and (N,) class indices (``-1`` = background crop)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    cls_index = {cs: i for i, cs in enumerate(CLASSES)}
    xs: list[np.ndarray] = []
    ys: list[int] = []
    h, w = size_hw
    for s in tqdm(range(n_scenes), desc="crops", unit="scene", disable=not progress):
        sc = generate_scene(s, w, h)
        for k in range(len(sc)):
            m = sc.masks[k]
            if int(m.sum()) <= TEXT_MIN_AREA:
                continue
            box = sc.xyxy[k].astype(np.float64)
            bw, bh = box[2] - box[0], box[3] - box[1]
            jit = box + rng.uniform(-0.12, 0.12, 4) * np.array([bw, bh, bw, bh])
            for b in (box, jit):
                c = crop_of(sc.image, m, b)
                if c is not None:
                    xs.append(to_input_uint8(c))
                    ys.append(cls_index[(sc.colors[k], sc.shapes[k])])
        # one background crop per scene: a random box of the area outside every object
        bg = ~sc.masks.any(axis=0)
        bw, bh = rng.integers(w // 6, w // 2 + 1), rng.integers(h // 6, h // 2 + 1)
        x0, y0 = rng.integers(0, w - bw + 1), rng.integers(0, h - bh + 1)
        c = crop_of(sc.image, bg, np.array([x0, y0, x0 + bw, y0 + bh]))
        if c is not None:
            xs.append(to_input_uint8(c))
            ys.append(-1)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def caption_tokens(tokenizer: Any, rng: np.random.Generator) -> tuple[Any, list[str]]:
    """One caption per class (random template) plus ``"the background"``, tokenised."""
    caps = [TEMPLATES[rng.integers(len(TEMPLATES))].format(c=c, s=s) for c, s in CLASSES]
    caps.append("the background")
    return tokenizer(caps), caps


def seen_token_ids(tokenizer: Any) -> np.ndarray:
    """Sorted open_clip ids of every token the training captions use (incl. pad/SOT/EOT)."""
    caps = [t.format(c=c, s=s) for t in set(TEMPLATES) for c, s in CLASSES]
    caps.append("the background")
    ids = np.unique(tokenizer(caps).numpy())
    return np.union1d(ids, [0, tokenizer.sot_token_id, tokenizer.eot_token_id])


def train(
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    max_minutes: float,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Multi-positive symmetric InfoNCE over crops and the class captions."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = open_clip.create_model(MODEL_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    pre = ClipPreprocess(size=IMAGE_SIZE)
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    n_cls = len(CLASSES) + 1  # + background
    labels_all = np.where(y < 0, n_cls - 1, y)
    t0 = time.time()
    model.train()
    bar = tqdm(range(steps), desc="train", unit="step", disable=not progress)
    done = 0
    loss_ema = None
    for step in bar:
        idx = rng.integers(0, len(x), batch)
        xb = torch.from_numpy(x[idx]).permute(0, 3, 1, 2).float() / 255.0
        if rng.random() < 0.5:
            xb = xb.flip(3)
        xb = (xb - mean) / std
        lab = torch.from_numpy(labels_all[idx])
        tokens, _ = caption_tokens(tokenizer, rng)
        img = F.normalize(model.encode_image(xb), dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T  # (B, C)
        loss_i = F.cross_entropy(logits, lab)
        # text -> image: every crop of the class is a positive (soft targets)
        present = torch.unique(lab)
        tl = logits.T[present]  # (P, B)
        target = (lab[None, :] == present[:, None]).float()
        target = target / target.sum(1, keepdim=True)
        loss_t = -(target * F.log_softmax(tl, dim=1)).sum(1).mean()
        loss = 0.5 * (loss_i + loss_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done = step + 1
        lv = loss.item()
        loss_ema = lv if loss_ema is None else 0.95 * loss_ema + 0.05 * lv
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_ema:.3f}", scale=f"{float(scale):.1f}")
        if time.time() - t0 > max_minutes * 60:
            break
    bar.close()
    model.eval()
    info = {
        "steps": done,
        "planned_steps": steps,
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "minutes": round((time.time() - t0) / 60, 2),
        "final_loss_ema": round(float(loss_ema or 0.0), 4),
    }
    return model, info


def crop_accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 class accuracy of crops against the ``"a {c} {s}"`` captions (sanity check)."""
    import open_clip
    import torch
    import torch.nn.functional as F

    tok = open_clip.get_tokenizer(MODEL_NAME)
    pre = ClipPreprocess(size=IMAGE_SIZE)
    keep = y >= 0
    x, y = x[keep], y[keep]
    with torch.no_grad():
        txt = F.normalize(model.encode_text(tok([f"a {c} {s}" for c, s in CLASSES])), dim=-1)
        hits = 0
        for i in range(0, len(x), 256):
            xb = torch.from_numpy(pre.__call__(list(x[i : i + 256])))
            img = F.normalize(model.encode_image(xb), dim=-1)
            hits += int((torch.argmax(img @ txt.T, 1).numpy() == y[i : i + 256]).sum())
    return hits / max(len(x), 1)


def unify_unseen_rows(model: Any, seen: np.ndarray) -> None:
    """Give every token never seen in training one shared UNK row (zeros)."""
    import torch

    with torch.no_grad():
        text = getattr(model, "text", model)  # CustomTextCLIP keeps its text tower apart
        w = text.token_embedding.weight
        unseen = torch.ones(w.shape[0], dtype=torch.bool)
        unseen[torch.from_numpy(seen)] = False
        w[unseen] = 0.0


def prune_text_vocab(path: Path, seen: np.ndarray) -> dict[str, Any]:
    """Replace the (V, W) token table of a text-encoder graph by a compact table + id lookup.

    Compact row 0 is the shared UNK row (the value of an unseen token's row), rows 1.. the seen
    tokens in id order. Returns facts for the manifest.
    """
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    vocab = 49408
    hits = [
        n
        for n in g.node
        if n.op_type == "Gather"
        and n.input[0] in inits
        and tuple(inits[n.input[0]].dims)[:1] == (vocab,)
        and len(inits[n.input[0]].dims) == 2
    ]
    if len(hits) != 1:
        raise RuntimeError(f"{path.name}: expected one token-table Gather, found {len(hits)}")
    node = hits[0]
    table = numpy_helper.to_array(inits[node.input[0]])
    unseen = np.setdiff1d(np.arange(vocab), seen)
    unk = table[unseen[0]]
    if not np.array_equal(table[unseen], np.broadcast_to(unk, (len(unseen), table.shape[1]))):
        raise RuntimeError("unseen token rows differ; cannot prune losslessly")
    compact = np.concatenate([unk[None], table[seen]]).astype(table.dtype)
    lookup = np.zeros(vocab, dtype=np.int32)
    lookup[seen] = np.arange(1, len(seen) + 1, dtype=np.int32)
    g.initializer.remove(inits[node.input[0]])
    g.initializer.extend(
        [
            numpy_helper.from_array(compact, "token_table_compact"),
            numpy_helper.from_array(lookup, "token_id_lookup"),
        ]
    )
    lookup_node = helper.make_node(
        "Gather", ["token_id_lookup", node.input[1]], ["token_ids_compact"], name="TokenIdLookup"
    )
    node.input[0] = "token_table_compact"
    node.input[1] = "token_ids_compact"
    pos = list(g.node).index(node)
    g.node.insert(pos, lookup_node)
    onnx.checker.check_model(m)
    before = path.stat().st_size
    onnx.save(m, str(path))
    return {"bytes_before": before, "bytes_after": path.stat().st_size, "rows": len(compact)}


def export_into_bundle(model: Any, seen: np.ndarray, bundle: Path, work: Path) -> dict[str, Any]:
    """Export, prune, verify and add the CLIP files + ``clip`` section to ``bundle``."""
    import onnxruntime as ort
    import open_clip
    import torch

    from edge.bundle import ClipSection, read_manifest
    from edge.clip import ClipEncoder
    from export.clip import TOWERS, export_clip
    from export.fastsam import file_entry, write_manifest

    ckpt = work / f"{MODEL_NAME}.pt"
    torch.save(model.state_dict(), ckpt)
    stage = work / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    section = export_clip(
        MODEL_NAME, str(ckpt), stage, int8=True, keep_fp32=True, threads=1
    ).to_json()
    tok = open_clip.get_tokenizer(MODEL_NAME)
    probe = [
        "a red circle",
        "the blue triangle",
        "a photo of a cyan hexagon",
        "a purple dinosaur on a skateboard",
        "",
    ]
    probe_ids = tok(probe).numpy().astype(np.int32)
    pruning: dict[str, Any] = {"seen_tokens": int(len(seen))}
    for prec in section["precisions"]:
        path = stage / section["files"]["text"][prec]
        before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ref = before.run(None, {"tokens": probe_ids})[0]
        facts = prune_text_vocab(path, seen)
        after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = after.run(None, {"tokens": probe_ids})[0]
        facts["max_abs_vs_unpruned"] = float(np.abs(got - ref).max())
        if facts["max_abs_vs_unpruned"] > 1e-5:
            raise RuntimeError(f"pruned {path.name} differs: {facts['max_abs_vs_unpruned']}")
        pruning[prec] = facts
    section["text"]["vocabulary"] = {
        "pruned": True,
        "rows": pruning["fp32"]["rows"],
        "unseen_tokens": "one shared UNK row",
        **pruning,
    }
    section["training"] = TRAIN_FACTS
    manifest = read_manifest(bundle)
    names = [section["tokenizer"]["bpe"]] + [
        section["files"][t][p] for t in TOWERS for p in section["precisions"]
    ]
    names += list((section.get("dense") or {}).get("files", {}).values())  # conv towers
    files = dict(manifest.files)
    for name in names:
        shutil.copyfile(stage / name, bundle / name)
        files[name] = file_entry(bundle / name, "asset")
    write_manifest(bundle, replace(manifest, files=files, clip=ClipSection.from_json(section)))
    enc = ClipEncoder.from_bundle(bundle, threads=1)  # hashes + I/O checks
    emb = enc.encode_text(["a red circle"])
    assert emb.shape == (1, MODEL_CFG["embed_dim"])
    return {n: (bundle / n).stat().st_size for n in names}


TRAIN_FACTS: dict[str, Any] = {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=4000, help="training seeds 0..N-1")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=15.0, help="training time box")
    ap.add_argument("--out", type=Path, default=ROOT / "work" / "clip-demo")
    ap.add_argument("--add-to-bundle", type=Path, default=None, metavar="DIR")
    ap.add_argument(
        "--tower",
        choices=sorted(TOWER_CFGS),
        default="vit",
        help="vit: the demo bundle's tiny ViT; mci0: the MobileCLIP-family proxy (FastViT-MCi0)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument(
        "--from-checkpoint",
        type=Path,
        default=None,
        metavar="PT",
        help="skip training: export this script's saved state dict (with --add-to-bundle)",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    global MODEL_NAME, MODEL_CFG  # the tower is chosen once, before anything reads them
    MODEL_NAME, MODEL_CFG = TOWER_CFGS[args.tower]

    import torch

    torch.set_num_threads(args.threads)
    # torch 2.14.1's oneDNN backward segfaults on the MobileCLIP tower on x86 without AVX-512
    # (seen on an AVX2-only AMD EPYC, 1 or 2 threads); its plain CPU kernels train it correctly
    torch.backends.mkldnn.enabled = False
    progress = not args.no_progress
    args.out.mkdir(parents=True, exist_ok=True)
    register_config(Path(tempfile.mkdtemp(prefix="clipcfg-")))
    import open_clip

    if args.from_checkpoint is not None:
        if args.add_to_bundle is None:
            ap.error("--from-checkpoint needs --add-to-bundle DIR")
        model = open_clip.create_model(MODEL_NAME, pretrained=None)
        model.load_state_dict(torch.load(args.from_checkpoint, map_location="cpu"))
        model.eval()
        facts = args.from_checkpoint.with_name("train.json")
        if facts.is_file():
            TRAIN_FACTS.update(json.loads(facts.read_text(encoding="utf-8"))["training"])
        seen = seen_token_ids(open_clip.get_tokenizer(MODEL_NAME))
        files = export_into_bundle(model, seen, args.add_to_bundle, args.out)
        print(json.dumps({"files": files}, indent=2))
        return 0
    t0 = time.time()
    x, y = build_dataset(args.scenes, (args.imgsz, args.imgsz), args.seed, progress)
    t_data = time.time() - t0
    model, info = train(
        x, y, args.steps, args.batch, args.lr, args.seed, args.max_minutes, progress
    )
    val_x, val_y = build_dataset_val(args.imgsz, progress)
    acc = crop_accuracy(model, val_x, val_y)
    seen = seen_token_ids(open_clip.get_tokenizer(MODEL_NAME))
    unify_unseen_rows(model, seen)
    acc_unk = crop_accuracy(model, val_x, val_y)
    torch.save(model.state_dict(), args.out / f"{MODEL_NAME}.pt")  # for later exports
    TRAIN_FACTS.update(
        {
            "data": f"edge.demo.scenes seeds 0..{args.scenes - 1} at {args.imgsz}x{args.imgsz}",
            "crops": int(len(x)),
            "templates": list(TEMPLATES),
            **info,
            "val_crop_top1": round(acc, 4),
            "val_crop_top1_after_unk": round(acc_unk, 4),
            "script": "scripts/train_clip_demo.py",
        }
    )
    report: dict[str, Any] = {"data_seconds": round(t_data, 1), "training": dict(TRAIN_FACTS)}
    if args.add_to_bundle is not None:
        report["files"] = export_into_bundle(model, seen, args.add_to_bundle, args.out)
        report["clip_bytes_total"] = sum(report["files"].values())
    (args.out / "train.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


def build_dataset_val(imgsz: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """GT crops of validation seeds (``900_000 ..``), a quick sanity check of training."""
    from edge.demo.scenes import VAL_SEED_START

    xs, ys = [], []
    cls_index = {cs: i for i, cs in enumerate(CLASSES)}
    for s in range(VAL_SEED_START, VAL_SEED_START + 150):
        sc = generate_scene(s, imgsz, imgsz)
        for k in range(len(sc)):
            c = crop_of(sc.image, sc.masks[k], sc.xyxy[k])
            if c is not None and int(sc.masks[k].sum()) > TEXT_MIN_AREA:
                xs.append(to_input_uint8(c))
                ys.append(cls_index[(sc.colors[k], sc.shapes[k])])
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


if __name__ == "__main__":
    raise SystemExit(main())
