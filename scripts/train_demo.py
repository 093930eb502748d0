#!/usr/bin/env python3
"""Train and evaluate the demo model: a small FastSAM-style YOLOv8-seg (nc=1) on the demo
scenes (``edge.demo.scenes``).

Needs the export extra (torch, ultralytics); runs fully offline on CPU.

Steps (each is skipped when already done, so re-running the script resumes):

1. Write a YOLO-seg dataset under ``<out>/data``: PNG images plus polygon labels from the
   exact ground-truth masks, training seeds ``0 .. N-1``, validation seeds ``900_000 ..``.
   Single class ``object`` (class-agnostic, like FastSAM).
2. Train ``yolov8n-seg.yaml`` (built from the YAML, no pretrained weights) with nc=1 at
   imgsz 320 on CPU, ``overlap_mask=False`` (FastSAM's recipe). Checkpoints go to
   ``<out>/runs/fastsam-demo/weights/{last,best}.pt``; an unfinished ``last.pt`` is resumed
   with ultralytics ``resume=True``, a finished one (optimizer stripped) skips training.
3. Evaluate ``best.pt`` on held-out seeds (``>= 1_000_000``): 200 scenes at 320x320 and 50
   at 480x360 (seeds ``1_500_000 ..``), ultralytics predict with ``conf=0.4, iou=0.9,
   retina_masks=True, imgsz=320``. Reports recall at mask IoU 0.5 (a ground-truth instance
   is found if some predicted mask has IoU >= 0.5 with it) and the mean best IoU, per size
   bucket too, and writes ``<out>/eval.json``. The metric helpers live in ``edge.metrics``
   (numpy only, shared with tests and benchmarks).

Polygon labels: ultralytics reads one polygon per instance line. A visible mask can have
several parts (an occluder cuts it in two) or holes (a smaller object on top of it), so
all contours from ``cv2.findContours(RETR_CCOMP)`` (outer boundaries and holes) are joined
into one polygon by zero-width "keyhole" bridges (go to the nearest point of the next
contour, walk around it, come back). Bridges add no area and holes keep their opposite
orientation, so ``cv2.fillPoly`` (which ultralytics uses to rasterise labels) reproduces the
mask up to the pixels on the bridge lines. Keeping only the largest part would instead drop
the other parts from the target, and an outer contour alone would fill the holes, teaching
the model to cover the occluding object.

Examples:
    python scripts/train_demo.py                      # data + train + eval (resumable)
    python scripts/train_demo.py --epochs 25 --images 1500
    python scripts/train_demo.py --smoke --out /tmp/smoke   # CI: < 3 min on 2 cores
    python scripts/train_demo.py --eval-only work/demo-train/runs/fastsam-demo/weights/best.pt
    # FastSAM-s (yolov8s-seg, nc=1) on shapes, then fine-tuned at 640 (docs/benchmarks.md, int8):
    python scripts/train_demo.py --width 0.5 --images 600 --epochs 8 --out work/fastsam-s-train
    python scripts/train_demo.py --width 0.5 --imgsz 640 --images 300 --epochs 2 \
        --init-weights work/fastsam-s-train/runs/fastsam-demo/weights/best.pt \
        --out work/fastsam-s-640
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported anywhere

from edge.demo.scenes import (  # noqa: E402
    EVAL_SEED_START,
    TRAIN_SEED_START,
    VAL_SEED_START,
    WORLDS,
    Scene,
    generate_scene,
    iter_scenes,
    restyle,
)
from edge.metrics import SegEvalAccumulator  # noqa: E402

RUN_NAME = "fastsam-demo"
MODEL_YAML = "yolov8n-seg.yaml"
N_WIDTH = 0.25  # width multiple of the ultralytics n scale
WIDE_EVAL_SEED_START = EVAL_SEED_START + 500_000
DATASET_VERSION = 1


def _progress(it: Any, **kw: Any) -> Any:
    """Wrap an iterable in tqdm if available."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the export extra
        return it
    return tqdm(it, **kw)


# --------------------------------------------------------------------------- labels


def _splice(path: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Join ``part`` (a closed contour) into ``path`` through its nearest point pair."""
    d = ((path[:, None, :] - part[None, :, :]) ** 2).sum(axis=-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    loop = np.concatenate([part[j:], part[: j + 1]])  # walk around part, end where we started
    return np.concatenate([path[: i + 1], loop, path[i:]])


def mask_to_polygon(mask: np.ndarray) -> np.ndarray | None:
    """One polygon for a (possibly multi-part, holed) instance mask.

    Args:
        mask: (H, W) bool mask.

    Returns:
        (N, 2) int32 pixel coordinates (x, y), N >= 3, or None for an empty mask.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    parts = [c.reshape(-1, 2).astype(np.int64) for c in contours if len(c)]
    if not parts:
        return None
    parts.sort(key=lambda p: -abs(cv2.contourArea(p.astype(np.float32))) - 1e-3 * len(p))
    path, rest = parts[0], parts[1:]
    while rest:  # attach the contour closest to what is already joined
        dists = [((path[:, None] - p[None]) ** 2).sum(-1).min() for p in rest]
        path = _splice(path, rest.pop(int(np.argmin(dists))))
    if len(path) < 3:
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
        path = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return path.astype(np.int32)


def label_lines(masks: np.ndarray, classes: Sequence[int] | None = None) -> list[str]:
    """YOLO-seg label lines (class id, normalised polygon) for (K, H, W) masks.

    Args:
        masks: (K, H, W) bool instance masks.
        classes: K class ids (default: all 0, class-agnostic).
    """
    h, w = masks.shape[1:]
    ids = [0] * len(masks) if classes is None else list(classes)
    if len(ids) != len(masks):
        raise ValueError(f"classes: expected {len(masks)} ids (one per mask), got {len(ids)}")
    lines = []
    for m, c in zip(masks, ids, strict=True):
        poly = mask_to_polygon(m)
        if poly is None:
            continue
        xy = poly.astype(np.float64) / (w, h)
        lines.append(f"{int(c)} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1)))
    return lines


def write_dataset(
    data_dir: Path,
    n_train: int,
    n_val: int,
    width: int,
    height: int,
    train_start: int = TRAIN_SEED_START,
    objects: tuple[int, int] = (3, 8),
    world: str = "demo",
    names: Sequence[str] = ("object",),
    classify: Callable[[Scene], list[int] | None] | None = None,
) -> Path:
    """Write (or reuse) the YOLO-seg dataset and return its ``data.yaml``.

    ``train_start`` and ``objects`` (min, max instances per scene) give another scene mix than
    the demo model's (seeds below ``VAL_SEED_START`` only, so held-out sets stay unseen);
    ``world`` another style (``edge.demo.scenes.restyle``). ``names`` and ``classify`` give
    per-instance classes (the YOLOE demo: one class per colour-shape phrase): ``classify``
    maps a scene to one index into ``names`` per instance, or ``None`` to skip the scene (its
    seed is passed over and the next one tried, so a split still holds ``n`` scenes).

    The dataset is regenerated from scratch when the counts, the image size or the source of
    ``edge/demo/scenes.py`` change (recorded in ``manifest.json``); otherwise existing files are
    kept, so an interrupted write simply continues.
    """
    scenes_src = (REPO_ROOT / "edge" / "demo" / "scenes.py").read_bytes()
    manifest = {
        "version": DATASET_VERSION,
        "train": [train_start, n_train],
        "val": [VAL_SEED_START, n_val],
        "objects": list(objects),
        "world": world,
        "size": [width, height],
        "scenes_sha256": hashlib.sha256(scenes_src).hexdigest(),
    }
    if classify is not None:  # the class-agnostic manifest stays as it was (no rewrite)
        manifest["names"] = list(names)
    mpath = data_dir / "manifest.json"
    if data_dir.exists():
        old = json.loads(mpath.read_text()) if mpath.exists() else None
        if old != manifest:
            print(f"dataset at {data_dir} is stale or incomplete; rewriting")
            shutil.rmtree(data_dir)
    for split, start, count in (
        ("train", train_start, n_train),
        ("val", VAL_SEED_START, n_val),
    ):
        img_dir, lbl_dir = data_dir / "images" / split, data_dir / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        bar = _progress(range(count), desc=f"writing {split}", unit="img")
        seed, done = start, 0
        while done < count:
            stem = f"scene_{seed:06d}"
            img_path, lbl_path = img_dir / f"{stem}.png", lbl_dir / f"{stem}.txt"
            seed += 1
            if img_path.exists() and lbl_path.exists():
                done += 1
                if hasattr(bar, "update"):
                    bar.update(1)
                continue
            scene = generate_scene(seed - 1, width, height, objects[0], objects[1])
            ids = classify(scene) if classify is not None else None
            if classify is not None and ids is None:
                continue
            lbl_path.write_text("\n".join(label_lines(scene.masks, ids)) + "\n")
            if not cv2.imwrite(str(img_path), restyle(scene.image, seed - 1, world)):
                raise OSError(f"could not write {img_path}")
            done += 1
            if hasattr(bar, "update"):
                bar.update(1)
        if hasattr(bar, "close"):
            bar.close()
        if split == "train" and seed > VAL_SEED_START:
            raise ValueError("training scenes ran into the validation seeds; ask for fewer")
    yaml_path = data_dir / "data.yaml"
    name_lines = "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    yaml_path.write_text(
        f"# generated by scripts/train_demo.py\npath: {data_dir.resolve()}\n"
        f"train: images/train\nval: images/val\nnames:\n{name_lines}"
    )
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    return yaml_path


# --------------------------------------------------------------------------- training


def _checkpoint_state(last: Path) -> str:
    """``"none"``, ``"partial"`` (resumable) or ``"finished"`` for a ``last.pt`` path."""
    if not last.exists():
        return "none"
    import torch

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    epoch = ckpt.get("epoch", -1)
    epochs = (ckpt.get("train_args") or {}).get("epochs", 0)
    if epoch == -1 or epoch + 1 >= epochs:  # stripped by final_eval, or nothing left to do
        return "finished"
    return "partial"


def _model_cfg(out: Path, width: float) -> str:
    """Model YAML: ultralytics' ``yolov8n-seg.yaml``, or a copy with a slimmer width."""
    if abs(width - N_WIDTH) < 1e-9:
        return MODEL_YAML
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    cfg = YAML.load(check_yaml("yolov8-seg.yaml"))
    depth = cfg["scales"]["n"][0]
    cfg.pop("scales")
    cfg.update(nc=1, depth_multiple=depth, width_multiple=width)
    path = out / f"fastsam-demo-w{width:g}-seg.yaml"
    YAML.save(path, cfg)
    return str(path)


def _thread_callback(threads: int) -> Callable[[Any], None]:
    def _set(_: Any) -> None:
        import torch

        torch.set_num_threads(threads)

    return _set


def train(args: argparse.Namespace, data_yaml: Path) -> Path:
    """Train (or resume, or skip when finished) and return the path of ``best.pt``."""
    import torch
    from ultralytics import YOLO

    out: Path = args.out
    run_dir = out / "runs" / RUN_NAME
    last, best = run_dir / "weights" / "last.pt", run_dir / "weights" / "best.pt"
    state = _checkpoint_state(last)
    if state == "finished":
        print(f"training already finished: {last}")
        return best if best.exists() else last
    torch.set_num_threads(args.threads)
    if state == "partial":
        print(f"resuming from {last}")
        model = YOLO(str(last))
        kwargs: dict[str, Any] = {"resume": True, "device": "cpu", "workers": args.workers}
    else:
        # --init-weights: fine-tune trained weights (e.g. at a larger imgsz) instead of a fresh net
        model = YOLO(str(args.init_weights) if args.init_weights else _model_cfg(out, args.width))
        epochs = args.epochs
        # short CPU runs: fewer warm-up and no-mosaic epochs than ultralytics' 3 and 10; with
        # --hours ultralytics re-estimates the epoch count, so use small fixed values
        close_mosaic = args.close_mosaic
        if close_mosaic is None:
            close_mosaic = 3 if args.hours else min(10, epochs // 4)
        warmup = args.warmup_epochs
        if warmup is None:
            warmup = 2.0 if args.hours else min(3.0, 0.1 * epochs)
        kwargs = {
            "data": str(data_yaml),
            "epochs": epochs,
            "imgsz": args.imgsz,
            "batch": args.batch,
            "workers": args.workers,  # NB: ultralytics forces workers=0 on CPU
            "device": "cpu",
            "plots": False,
            "amp": False,
            "val": True,
            "overlap_mask": False,
            "project": str((out / "runs").resolve()),
            "name": RUN_NAME,
            "exist_ok": True,
            # a fresh net, or (--init-weights) the given trained weights
            "pretrained": str(args.init_weights) if args.init_weights else False,
            "single_cls": True,
            "close_mosaic": close_mosaic,
            "warmup_epochs": warmup,
            "save_period": args.save_period,
            "seed": args.seed,
        }
        if args.hours:
            kwargs["time"] = args.hours
    # ultralytics' select_device() resets torch to min(8, cpu_count - 1) threads (1 on a
    # 2-core box): put ours back once the trainer exists and at every epoch
    cb = _thread_callback(args.threads)
    model.add_callback("on_pretrain_routine_end", cb)
    model.add_callback("on_train_epoch_start", cb)
    t0 = time.time()
    model.train(**kwargs)
    print(f"training took {time.time() - t0:.0f} s")
    return best if best.exists() else last


# --------------------------------------------------------------------------- evaluation


def evaluate(
    weights: Path,
    out_json: Path,
    sets: list[tuple[str, int, int, int, int]],
    imgsz: int = 320,
    conf: float = 0.4,
    iou: float = 0.9,
    threads: int = 2,
    world: str = "demo",
) -> dict[str, Any]:
    """Recall at mask IoU 0.5 and mean best IoU of ``weights`` on held-out scenes.

    Args:
        weights: Local ultralytics ``.pt`` checkpoint.
        out_json: Where to write the results.
        sets: ``(name, start_seed, count, width, height)`` per evaluation set.
        imgsz: Inference size.
        conf: Confidence threshold.
        iou: NMS IoU threshold.
        threads: torch CPU threads.
        world: Scene style (``edge.demo.scenes.restyle``).

    Returns:
        The results written to ``out_json``.
    """
    import torch
    from ultralytics import YOLO

    model = YOLO(str(weights))
    overall = SegEvalAccumulator(thr=0.5)
    results: dict[str, Any] = {
        "weights": str(weights),
        "settings": {"imgsz": imgsz, "conf": conf, "iou": iou, "retina_masks": True},
        "sets": {},
    }
    for name, start, count, width, height in sets:
        if count <= 0:
            continue
        acc = SegEvalAccumulator(thr=0.5)
        t_pred = 0.0
        for scene in _progress(
            iter_scenes(start, count, width=width, height=height),
            total=count,
            desc=f"eval {name}",
            unit="img",
        ):
            t = time.perf_counter()
            res = model.predict(
                restyle(scene.image, scene.seed, world),  # numpy input is BGR, like scene.image
                imgsz=imgsz,
                conf=conf,
                iou=iou,
                retina_masks=True,
                device="cpu",
                verbose=False,
            )[0]
            t_pred += time.perf_counter() - t
            torch.set_num_threads(threads)  # predict's select_device() resets it
            if res.masks is None:
                pred = np.zeros((0, height, width), dtype=bool)
            else:
                pred = res.masks.data.cpu().numpy() > 0.5
            if pred.shape[1:] != (height, width):
                raise RuntimeError(f"mask size {pred.shape[1:]} != image {(height, width)}")
            acc.add(scene.masks, pred)
            overall.add(scene.masks, pred)
        summary = acc.summary()
        summary.update(
            seeds=[start, start + count - 1],
            size=[width, height],
            predict_ms_per_image=1000.0 * t_pred / count,
        )
        results["sets"][name] = summary
        print(
            f"{name}: recall@0.5 = {summary['recall']:.4f}, mean best IoU = "
            f"{summary['mean_best_iou']:.4f} ({summary['instances']} instances, "
            f"{summary['predictions_per_image']:.1f} predictions/image, "
            f"{summary['predict_ms_per_image']:.0f} ms/image)"
        )
    results["overall"] = overall.summary()
    o = results["overall"]
    print(f"overall: recall@0.5 = {o['recall']:.4f}, mean best IoU = {o['mean_best_iou']:.4f}")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_json}")
    return results


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--out", type=Path, help="work dir (default work/demo-train, smoke: work/demo-smoke)"
    )
    p.add_argument("--images", type=int, default=1500, help="training scenes (seeds 0..N-1)")
    p.add_argument("--val-images", type=int, default=150, help="validation scenes (900_000..)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument(
        "--hours", type=float, default=0.0, help="ultralytics time limit (overrides epochs)"
    )
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--width", type=float, default=N_WIDTH, help="width multiple (0.25 = n)")
    p.add_argument(
        "--init-weights",
        type=Path,
        metavar="PT",
        help="start from these trained weights (fine-tuning, e.g. at a larger --imgsz)",
    )
    p.add_argument("--close-mosaic", type=int, help="final epochs without mosaic (auto)")
    p.add_argument("--warmup-epochs", type=float, help="warm-up epochs (auto)")
    p.add_argument("--save-period", type=int, default=-1, help="extra epochN.pt every N epochs")
    p.add_argument("--eval-images", type=int, default=200, help="held-out 320x320 scenes")
    p.add_argument("--eval-wide-images", type=int, default=50, help="held-out 480x360 scenes")
    p.add_argument("--conf", type=float, default=0.4)
    p.add_argument("--iou", type=float, default=0.9)
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--eval-only", type=Path, metavar="WEIGHTS", help="only evaluate WEIGHTS")
    p.add_argument("--smoke", action="store_true", help="1 epoch on 8 tiny images (CI)")
    p.add_argument("--seed", type=int, default=0, help="training seed (ultralytics)")
    p.add_argument(
        "--train-seed-start", type=int, default=TRAIN_SEED_START,
        help="first training scene seed (another scene mix; must stay below the val seeds)",
    )  # fmt: skip
    p.add_argument(
        "--objects", default="3,8", help="MIN,MAX objects per training scene (scene mix)"
    )
    p.add_argument(
        "--world", choices=WORLDS, default="demo",
        help="scene style of the training data (texture: another palette, stripes, noise; "
        "edge.demo.scenes.restyle)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.smoke:
        args.images, args.val_images, args.epochs, args.hours = 8, 4, 1, 0.0
        args.imgsz, args.batch, args.workers = 160, 4, 0
        args.eval_images, args.eval_wide_images = 2, 1
    if args.out is None:
        args.out = REPO_ROOT / "work" / ("demo-smoke" if args.smoke else "demo-train")
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = args.imgsz  # training scenes are square at the training size
    wide = (size * 3 // 2, size * 9 // 8)  # 480x360 at imgsz 320
    sets = [
        (f"{size}x{size}", EVAL_SEED_START, args.eval_images, size, size),
        (f"{wide[0]}x{wide[1]}", WIDE_EVAL_SEED_START, args.eval_wide_images, *wide),
    ]
    if args.eval_only is not None:
        evaluate(
            args.eval_only,
            args.out / "eval.json",
            sets,
            args.imgsz,
            args.conf,
            args.iou,
            args.threads,
            args.world,
        )
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    lo, hi = (int(v) for v in args.objects.split(","))
    if args.train_seed_start + args.images > VAL_SEED_START:
        raise SystemExit("--train-seed-start + --images must stay below the validation seeds")
    data_yaml = write_dataset(
        args.out / "data", args.images, args.val_images, size, size,
        args.train_seed_start, (lo, hi), args.world,
    )  # fmt: skip
    weights = train(args, data_yaml)
    print(f"weights: {weights}")
    if not args.no_eval:
        evaluate(
            weights, args.out / "eval.json", sets, args.imgsz, args.conf, args.iou, args.threads,
            args.world,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
