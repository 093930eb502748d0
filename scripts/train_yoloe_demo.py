#!/usr/bin/env python3
"""Train, export and evaluate the demo YOLOE: an open-vocabulary segmenter of the demo world.

A YOLOE-v8n-seg (built from ultralytics' yaml, embedding size 64), started from the FastSAM
demo detector's weights (backbone, neck, box and mask branches, frozen; ``--from-scratch``: a
fresh, narrower net), learns the demo scenes (``edge.demo.scenes``) with one class per
colour-shape phrase (``"red circle"``), each class embedding being the **demo CLIP's text
tower** output for the phrase (the ONNX file in ``edge/demo/assets/demo-bundle``, run by the
edge runtime). The exported bundle takes that same tower (``fastsam-export
--text-from-bundle``), so words given at runtime (``Segmenter.set_vocabulary``) land in the
space the head was trained on. Needs the export extra (torch, ultralytics); runs offline on CPU.

What "new words" means here, honestly: :data:`HELD_OUT` colour-shape combinations are never
trained (no training or validation scene contains one; those seeds are skipped), so finding
``"cyan star"`` at runtime is composition the detector never saw, from words it saw in other
pairs. Words outside the demo CLIP's vocabulary (it was trained on the demo captions only and
its token table is pruned to them: any other token is one shared UNK row) carry no meaning.

Steps (each resumes or is skipped when done, like ``scripts/train_demo.py``):

1. Text embeddings of the phrases with the demo bundle's fp32 text tower (``<out>/text.npz``).
2. The YOLO-seg dataset (``scripts/train_demo.py``'s writer: keyhole polygons, per-instance
   class ids): training seeds from 0 and validation seeds from 900_000 whose scenes hold no
   held-out combination.
3. Training with ultralytics' YOLOE segmentation trainer, the text embeddings fed per batch
   (ultralytics' own text model is never loaded); resumable from ``last.pt``.
4. Export with ``export.yoloe.export_yoloe_bundle`` (``--bundle-out``; the verified int8
   detector only by default (``--precisions``), the demo CLIP's text tower,
   :data:`DEFAULT_VOCAB`).
5. Evaluation of the exported bundle through ``edge.Segmenter`` on held-out seeds
   (``>= 1_000_000``): per phrase, recall at mask IoU 0.5 (some mask, any label), label
   accuracy (of the found instances, the fraction whose best mask carries the right word),
   precision of the word's masks; with the vocabulary of all 63 phrases (trained and held-out
   competing), the trained phrases only, the held-out phrases only, and the bare colour and
   shape words. Written to ``<out>/eval.json``.

The recipe measured in docs/benchmarks.md ("The demo YOLOE": its labels are not learned yet):

    nice -n 10 python scripts/train_yoloe_demo.py --images 1000 --hours 0.3 --no-eval

Examples:
    nice -n 10 python scripts/train_yoloe_demo.py --epochs 12 \\
        --bundle-out edge/demo/assets/demo-yoloe
    python scripts/train_yoloe_demo.py --smoke --out /tmp/smoke    # CI: < 3 min on 2 cores
    python scripts/train_yoloe_demo.py --eval-only edge/demo/assets/demo-yoloe --eval-images 200
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
for _p in (REPO_ROOT, REPO_ROOT / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported anywhere

from eval_prompts_demo import _CachedSession  # noqa: E402
from train_demo import _checkpoint_state, _progress, _thread_callback, write_dataset  # noqa: E402

from edge.demo.scenes import (  # noqa: E402
    COLORS,
    EVAL_SEED_START,
    SHAPES,
    Scene,
    iter_scenes,
)
from edge.metrics import mask_iou_matrix  # noqa: E402

RUN_NAME = "yoloe-demo"
BASE_YAML = "yoloe-v8-seg.yaml"
EMBED = 64  # the demo CLIP's embedding size
WIDTH = 0.25  # the n scale: the FastSAM demo detector's, whose weights start the training
SCRATCH_WIDTH = 0.125  # --from-scratch: half the n width
TEXT_FILE = "text.npz"
INIT_FILE = "init.pt"
FROZEN: dict[str, tuple[int | str, ...]] = {
    "embed": (*range(22), "22.cv2", "22.cv5", "22.proto", "22.savpe", "22.reprta"),
    "neck": (*range(10), "22.cv2", "22.cv5", "22.proto", "22.savpe", "22.reprta"),
    "all": ("22.savpe", "22.reprta"),
}  # fmt: skip
"""What does not learn, per ``--train`` (ultralytics ``freeze``; batch norms in eval mode).

``embed`` (the first recipe): only the embedding branch (``cv3``) and the contrastive heads
learn, over the FastSAM demo detector's backbone and neck. It found the objects (recall 0.99)
but left colour at chance: a detector trained class-agnostic with colour jitter keeps shape and
drops hue. ``neck`` also trains layers 10-21; ``all`` (the default) trains everything but the
text adapter (``reprta``), which stays as built in every recipe: a trainable adapter took the
shortcut of mapping every phrase to one direction (adapted phrase embeddings at mean cosine 0.98
after two epochs: objectness, no words). Whatever trains starts from batch norms re-estimated on
training scenes (:func:`reestimate_batchnorm`), so the first step computes what the FastSAM
detector does."""
CONTRASTIVE_INIT = (0.0, -4.6)
"""Each contrastive head's (``logit_scale``, ``bias``) at the start: a score is
``BN(embedding) . unit(text) * exp(logit_scale) + bias``, about N(0, 1) * 1 - 4.6 (p = 0.01, the
usual class prior) for an unrelated word and up to +3 for an aligned one. Ultralytics' own
(-1, -10) suits its long schedules; with a few hundred AdamW steps the bias barely moves and
no score would reach a useful threshold."""
FRESH_BRANCHES = ("model.22.cv3", "model.22.cv4")
"""The branches a FastSAM start does not provide (the embedding branch and the contrastive
heads). Elsewhere the batch norms keep the statistics :func:`reestimate_batchnorm` measured
while they train: with batches of 8, normalising by batch statistics moved layer 21's output by
44 % (mean relative change) at the first step, against 0 % in eval mode (measured on 8 scenes)."""
BRANCH_RENAMES = {"model.22.cv4.": "model.22.cv5."}
"""FastSAM's (Segment) mask-coefficient branch is ``cv4``; YOLOE's is ``cv5`` (its ``cv4`` are
the contrastive heads)."""


def phrase(color: str, shape: str) -> str:
    """The class phrase of a demo object (``"red circle"``)."""
    return f"{color} {shape}"


ALL_PHRASES: tuple[str, ...] = tuple(phrase(c, s) for c in COLORS for s in SHAPES)
HELD_OUT: tuple[str, ...] = tuple(
    phrase(c, SHAPES[(3 * i) % len(SHAPES)]) for i, c in enumerate(COLORS)
)
"""One combination per colour (every shape at least once): never in a training scene."""
TRAIN_PHRASES: tuple[str, ...] = tuple(p for p in ALL_PHRASES if p not in HELD_OUT)
DEFAULT_VOCAB: tuple[str, ...] = ALL_PHRASES
"""The bundle's default vocabulary: all 63 colour-shape phrases (the 9 held-out ones too), so
that every object of a demo scene gets its name and the export's int8 check sees every object.
The page or ``set_vocabulary`` changes it (``"cyan star"``, ``"red"``, ...). The phrases are
what the detector was trained on; bare colour or shape words were not (see the evaluation)."""
_TRAIN_INDEX = {p: i for i, p in enumerate(TRAIN_PHRASES)}


def classify(scene: Scene) -> list[int] | None:
    """Training class ids of a scene's objects, or ``None`` when one is a held-out phrase."""
    ids = [_TRAIN_INDEX.get(phrase(c, s)) for c, s in zip(scene.colors, scene.shapes, strict=True)]
    return None if any(i is None for i in ids) else [int(i) for i in ids if i is not None]


# --------------------------------------------------------------------------- text


def demo_text_bundle() -> Path:
    """The bundle whose CLIP text tower defines the class embeddings (the FastSAM demo's)."""
    from edge.demo import demo_bundle

    return demo_bundle()


def encode_phrases(words: Sequence[str], bundle: Path | None = None) -> np.ndarray:
    """(K, 64) L2-normalised embeddings of ``words`` by the demo bundle's fp32 text tower."""
    from edge.bundle import read_manifest, verify_file
    from edge.clip import TextTower
    from edge.tokenizer import ClipTokenizer

    bundle = bundle or demo_text_bundle()
    m = read_manifest(bundle)
    if m.clip is None:
        raise SystemExit(f"{bundle}: no CLIP text tower")
    path = verify_file(bundle, m, m.clip.files["text"]["fp32"])
    tok = ClipTokenizer.from_manifest(bundle, dict(m.clip.tokenizer))
    return TextTower(path, tok, m.clip.embed_dim, threads=2).encode(list(words))


def text_embeddings(out: Path) -> dict[str, np.ndarray]:
    """Phrase -> embedding for every phrase and the empty padding text (cached in ``out``)."""
    path = out / TEXT_FILE
    words = ["", *ALL_PHRASES]
    if path.exists():
        with np.load(path) as z:
            if list(z["words"]) == words:
                return dict(zip(words, z["embeddings"], strict=True))
    emb = encode_phrases(words)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, words=np.asarray(words), embeddings=emb)
    tmp.replace(path)
    return dict(zip(words, emb, strict=True))


# --------------------------------------------------------------------------- training


def model_yaml(out: Path, width: float) -> Path:
    """Ultralytics' ``yoloe-v8-seg.yaml`` at ``width``, the n depth, embedding size 64."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    cfg = YAML.load(check_yaml(BASE_YAML))
    depth = cfg["scales"]["n"][0]
    cfg.pop("scales")
    head_args = cfg["head"][-1][-1]  # [nc, nm, npr, embed, with_bn]
    head_args[3] = EMBED
    cfg.update(nc=len(TRAIN_PHRASES), depth_multiple=depth, width_multiple=width)
    cfg["text_model"] = "fastsam-demo-clip"  # informative: embeddings come from text.npz
    path = out / f"yoloe-v8-demo-w{width:g}-seg.yaml"
    YAML.save(path, cfg)
    return path


@contextmanager
def default_prompts(embed: int = EMBED) -> Iterator[None]:
    """Let ultralytics build YOLOE models whose embedding size is not 512.

    A YOLOE model without prompts falls back to ``zeros(1, 80, 512)`` (its stride probe at
    construction, for one); a class-level ``pe`` of size ``embed`` is found first. Its row
    count is the training vocabulary's: the head takes its class count from the last prompts
    it ran with, and the loss from the head (the trainer feeds one text per training phrase).
    Only for the span of the block: checkpoints pickle instances, never this class attribute.
    """
    import torch
    from ultralytics.nn.tasks import YOLOEModel

    before = YOLOEModel.__dict__.get("pe")  # nested blocks keep the outer one's
    YOLOEModel.pe = torch.zeros(1, len(TRAIN_PHRASES), embed)
    try:
        yield
    finally:
        if before is None:
            del YOLOEModel.pe
        else:
            YOLOEModel.pe = before


def init_from_fastsam(model: Any, detector_onnx: Path) -> dict[str, int]:
    """Copy a FastSAM (YOLOv8-seg) detector's weights from its ONNX file into a YOLOE-v8 model.

    The ONNX graph holds the fused weights (batch norm folded into each conv, initializers
    named after the torch modules): each ``Conv`` gets the folded kernel and a batch norm that
    adds the folded bias and nothing else (weight 1, running mean 0, running variance
    ``1 - eps``), so the module computes what the ONNX graph does. Convs whose shape differs
    (FastSAM's one-class score conv) keep their fresh weights.

    Args:
        model: A ``YOLOESegModel`` of the same scale as the detector.
        detector_onnx: The FastSAM bundle's ``fastsam.fp32.onnx``.

    Returns:
        Counts: ``copied`` convs, ``skipped`` (shape or missing), ``backbone`` (layers 0-21),
        and ``folded``: the names of the modules whose batch norm was set to the folded bias
        (what :func:`reestimate_batchnorm` gives real statistics before they train).

    Raises:
        SystemExit: A backbone or neck conv found nothing to copy (another architecture).
    """
    import onnx
    import torch
    from onnx import numpy_helper

    src = {
        t.name: numpy_helper.to_array(t).copy()
        for t in onnx.load(str(detector_onnx)).graph.initializer
        if t.name.startswith("model.")
    }
    modules = dict(model.named_modules())
    copied, skipped, done, folded = 0, 0, set(), []
    for name, weight in src.items():
        if not name.endswith(".weight") or ".dfl." in name:
            continue
        prefix = name[: -len(".weight")]
        target = prefix
        for old, new in BRANCH_RENAMES.items():
            target = target.replace(old, new)
        bias = src.get(prefix + ".bias")
        fused = target.endswith(".conv") and target[: -len(".conv")] in modules
        owner = modules.get(target[: -len(".conv")]) if fused else None
        conv = modules.get(target)
        if conv is None or bias is None or tuple(conv.weight.shape) != weight.shape:
            skipped += 1
            continue
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weight))
            if owner is not None and hasattr(owner, "bn"):
                bn = owner.bn
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(bias))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                folded.append(target[: -len(".conv")])
            else:
                conv.bias.copy_(torch.from_numpy(bias))
        copied += 1
        done.add(target)
    backbone = [
        n for n, m in modules.items()
        if isinstance(m, torch.nn.Conv2d) and int(n.split(".")[1]) < 22
    ]  # fmt: skip
    missing = [n for n in backbone if n not in done]
    if missing:
        raise SystemExit(f"--init-from: no weights for {missing[:5]} ... ({len(missing)})")
    return {"copied": copied, "skipped": skipped, "backbone": len(backbone), "folded": folded}


def reestimate_batchnorm(model: Any, owners: Sequence[str], images: Sequence[np.ndarray]) -> int:
    """Give the folded batch norms of ``owners`` real statistics without changing the function.

    :func:`init_from_fastsam` leaves each copied conv's batch norm as "add the folded bias"
    (weight 1, mean 0, variance ``1 - eps``). That is exact in eval mode, but a batch norm that
    trains normalises with its batch's statistics, which would rescale every layer at the first
    step and throw the detector away. Here each such norm's input (the conv output, no bias) is
    measured over ``images`` and the norm set to ``mean = mu``, ``var = sigma^2``, ``weight =
    sqrt(sigma^2 + eps)``, ``bias = mu + folded bias``: eval mode still computes ``conv + bias``
    exactly, and training mode computes it up to the batch's deviation from these statistics.
    One pass suffices: no layer's function changes, so no later layer's input does.

    Args:
        model: The YOLOE model (torch), as :func:`init_from_fastsam` left it.
        owners: Module names whose ``.bn`` is folded (its ``folded`` list).
        images: (H, W, 3) uint8 BGR training scenes, all of one size (a multiple of 32).

    Returns:
        The number of batch norms re-estimated.
    """
    import torch

    modules = dict(model.named_modules())
    sums: dict[str, list[torch.Tensor]] = {}
    hooks = []

    def hook(name: str) -> Any:
        def record(_m: Any, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
            x = inputs[0].detach().double()
            s = sums.setdefault(name, [torch.zeros(x.shape[1], dtype=torch.float64)] * 2 + [0])
            s[0] = s[0] + x.sum(dim=(0, 2, 3))
            s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
            s[2] += x.numel() // x.shape[1]

        return record

    for name in owners:
        hooks.append(modules[name].bn.register_forward_hook(hook(name)))
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(images), 8):
                batch = np.stack([im[..., ::-1] for im in images[i : i + 8]])  # BGR -> RGB
                x = torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()).float() / 255.0
                model(x)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for name, (total, squares, n) in sums.items():
            bn = modules[name].bn
            mean = total / n
            var = (squares / n - mean * mean).clamp_min(0.0)
            bias = bn.bias.double() - bn.running_mean.double()  # what the norm adds today
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.copy_((mean + bias).float())
    return len(sums)


def initial_checkpoint(out: Path, detector_onnx: Path, train: str = "all") -> Path:
    """The YOLOE-v8n of :func:`model_yaml` started from a FastSAM detector (``<out>/init*.pt``).

    With ``train`` other than ``embed``, the copied batch norms get statistics of 64 training
    scenes first (:func:`reestimate_batchnorm`): they train, and must not start as identities.
    """
    from ultralytics.nn.tasks import YOLOESegModel

    from export.yoloe import save_checkpoint

    path = out / (INIT_FILE if train == "embed" else "init-bn.pt")
    if path.exists():
        return path
    with default_prompts():
        model = YOLOESegModel(str(model_yaml(out, WIDTH)), nc=len(TRAIN_PHRASES), verbose=False)
    counts = init_from_fastsam(model, detector_onnx)
    folded = counts.pop("folded")
    print(f"init from {detector_onnx}: {counts}, {len(folded)} folded batch norms")
    if train != "embed":
        scenes = [s.image for s in iter_scenes(0, 100) if classify(s) is not None][:64]
        with default_prompts():
            n = reestimate_batchnorm(model, folded, scenes)
        print(f"batch norms re-estimated on 64 training scenes: {n}")
    import torch

    with torch.no_grad():  # see CONTRASTIVE_INIT
        for head in model.model[-1].cv4:
            head.logit_scale.fill_(CONTRASTIVE_INIT[0])
            head.bias.fill_(CONTRASTIVE_INIT[1])
    model.names = dict(enumerate(TRAIN_PHRASES))
    tmp = save_checkpoint(model, path.with_name(path.name + ".tmp"), imgsz=320)
    tmp.replace(path)
    return path


def make_trainer(embeddings: dict[str, np.ndarray], frozen_stats: bool = False) -> type:
    """Ultralytics' YOLOE seg trainer fed our text embeddings (never its text model).

    ``frozen_stats``: every batch norm but the fresh branches' (:data:`FRESH_BRANCHES`) keeps
    its statistics while training (eval mode; its scale and shift still learn).
    """
    import torch
    from ultralytics.models.yolo.yoloe import YOLOESegTrainer
    from ultralytics.models.yolo.yoloe.val import YOLOEDetectValidator, YOLOESegValidator

    table = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in embeddings.items()}

    def raw(names: Sequence[str]) -> torch.Tensor:
        return torch.stack([table[n] for n in names])[None]

    class Validator(YOLOESegValidator):
        """Validates with the demo embeddings as the class prompts."""

        def get_model(self, model: Any = None, trainer: Any = None, **_: Any) -> Any:
            m = super(YOLOEDetectValidator, self).get_model(model, trainer)
            if trainer is None:  # final_eval: a checkpoint path
                from ultralytics.nn.tasks import load_checkpoint
                from ultralytics.utils.torch_utils import select_device

                self.device = select_device(self.args.device, verbose=False)
                if isinstance(m, str | Path):
                    m, _ckpt = load_checkpoint(m, device=self.device)
                m.eval().to(self.device)
            else:
                self.device = trainer.device
            names = list(self.dataloader.dataset.data["names"].values())
            with torch.no_grad():
                m.set_classes(names, m.model[-1].get_tpe(raw(names).to(self.device)))
            return m

    class Trainer(YOLOESegTrainer):
        """YOLOE seg training on fixed per-phrase text embeddings."""

        def preprocess_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
            batch = super().preprocess_batch(batch)
            texts = list(itertools.chain(*batch["texts"]))
            feats = torch.stack([table[t] for t in texts]).to(self.device)
            batch["txt_feats"] = feats.reshape(len(batch["texts"]), -1, feats.shape[-1])
            return batch

        def _model_train(self) -> None:
            super()._model_train()
            if frozen_stats:  # see FRESH_BRANCHES
                for name, m in self.model.named_modules():
                    if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith(FRESH_BRANCHES):
                        m.eval()

        def get_validator(self) -> Any:
            validator = super().get_validator()
            return Validator(
                self.test_loader, save_dir=self.save_dir, args=validator.args,
                _callbacks=self.callbacks,
            )  # fmt: skip

    return Trainer


def train(args: argparse.Namespace, data_yaml: Path, embeddings: dict[str, np.ndarray]) -> Path:
    """Train (or resume, or skip when finished) and return the path of ``best.pt``."""
    import torch
    from ultralytics import YOLOE

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
        model = YOLOE(str(last))
        kwargs: dict[str, Any] = {"resume": True, "device": "cpu", "workers": args.workers}
    else:
        with default_prompts():
            if args.from_scratch:
                model = YOLOE(str(model_yaml(out, args.width)))
            elif args.init_weights is not None:  # fine-tune a run of this script further
                model = YOLOE(str(args.init_weights))
            else:
                model = YOLOE(str(initial_checkpoint(out, args.init_from, args.train)))
        kwargs = {
            "data": str(data_yaml),
            "epochs": args.epochs,
            "imgsz": args.imgsz,
            "batch": args.batch,
            # one optimizer step per batch: ultralytics' nominal batch (64) would accumulate 8
            # batches of 8 into one step, and a CPU run has only a few hundred batches
            "nbs": args.batch,
            "workers": args.workers,
            "device": "cpu",
            "plots": False,
            "amp": False,
            # per-epoch validation costs a quarter of an epoch here (54 words, NMS at conf
            # 0.001); ultralytics still validates the last epoch
            "val": False,
            "overlap_mask": False,
            "project": str((out / "runs").resolve()),
            "name": RUN_NAME,
            "exist_ok": True,
            "pretrained": not args.from_scratch,
            "freeze": None if args.from_scratch else list(FROZEN[args.train]),
            "close_mosaic": min(3, args.epochs // 3),
            # a short CPU run: ultralytics' "auto" optimizer would pick AdamW at
            # lr 0.002 * 5 / (4 + nc) (0.00017 for 54 phrases) and warm up for 100+ iterations
            "optimizer": "AdamW",
            "lr0": args.lr0,
            "lrf": 0.1,  # a few epochs: decay to a tenth, not ultralytics' hundredth
            "warmup_epochs": args.warmup_epochs,
            "warmup_bias_lr": 0.0,
            "seed": args.seed,
            # the scenes are busy already, and mosaic's four-image loading dominates an
            # iteration on a shared 2-core CPU (ultralytics loads in the main thread there)
            "mosaic": args.mosaic,
            "deterministic": False,
            # colour is the class: hue/saturation jitter would relabel objects
            "hsv_h": 0.0,
            "hsv_s": 0.0,
            "hsv_v": 0.2,
            "fliplr": 0.5,
        }
        if args.hours:
            kwargs["time"] = args.hours
    cb = _thread_callback(args.threads)
    model.add_callback("on_pretrain_routine_end", cb)
    model.add_callback("on_train_epoch_start", cb)
    t0 = time.time()
    with default_prompts():
        trainer = make_trainer(embeddings, frozen_stats=not args.from_scratch)
        model.train(trainer=trainer, **kwargs)
    print(f"training took {time.time() - t0:.0f} s")
    return best if best.exists() else last


# --------------------------------------------------------------------------- export


def export(weights: Path, bundle_out: Path, imgsz: int, int8: bool = True,
           int8_only: bool = False, conf: float = 0.25) -> Path:  # fmt: skip
    """The bundle: detector (fp32 + verified int8), head, demo text tower, default words.

    ``int8_only``: the bundle keeps the int8 detector alone (the fp32 file and its manifest
    entries are dropped after int8 passed its verification against it; the runtime reads the
    precision list). Without a verified int8, an int8-only bundle is refused.
    """
    from dataclasses import replace

    from edge.bundle import DETECTOR_FILES, read_manifest
    from export.common import ExportError
    from export.fastsam import _staging_dir, publish_bundle, write_manifest
    from export.yoloe import DEFAULT_THRESHOLDS, YoloeOptions, export_yoloe_bundle

    full = bundle_out.parent / f".{bundle_out.name}.full" if int8_only else bundle_out
    export_yoloe_bundle(
        weights,
        full,
        imgsz=imgsz,
        name=f"yoloe-demo-{imgsz}",
        thresholds=replace(DEFAULT_THRESHOLDS, conf=conf),
        options=YoloeOptions(vocab=DEFAULT_VOCAB, text_from=demo_text_bundle()),
        int8=int8 or int8_only,
    )
    if not int8_only:
        return bundle_out
    m = read_manifest(full)
    if "int8" not in m.precisions:
        status = m.quantization.status if m.quantization else "none"
        raise ExportError(f"int8-only bundle: int8 was not kept ({status}); use fp32,int8")
    fp32 = DETECTOR_FILES["fp32"]
    tmp = _staging_dir(bundle_out)
    for f in full.iterdir():
        if f.name not in (fp32, "bundle.json"):
            (tmp / f.name).write_bytes(f.read_bytes())
    files = {k: v for k, v in m.files.items() if k != fp32}
    write_manifest(tmp, replace(m, files=files, precisions=("int8",), default_precision="int8"))
    read_manifest(tmp)  # the runtime's own check of what was written
    publish_bundle(tmp, bundle_out)
    import shutil

    shutil.rmtree(full)
    return bundle_out


# --------------------------------------------------------------------------- evaluation

VOCABULARIES: dict[str, tuple[tuple[str, ...], str]] = {
    "all": (ALL_PHRASES, "phrase"),
    "trained": (TRAIN_PHRASES, "phrase"),
    "held_out": (HELD_OUT, "phrase"),
    "colours": (tuple(COLORS), "colour"),
    "shapes": (SHAPES, "shape"),
}
"""Evaluation vocabularies: name -> (words, what a ground-truth instance's word is)."""


class WordTally:
    """Per-word counts of one vocabulary: instances, found, rightly labelled, masks, true."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = tuple(words)
        self.counts = {w: {"instances": 0, "found": 0, "labelled": 0, "masks": 0, "true": 0}
                       for w in self.words}  # fmt: skip

    def add(self, gt_words: Sequence[str], gt: np.ndarray, pred: np.ndarray,
            labels: Sequence[str | None], thr: float = 0.5) -> None:  # fmt: skip
        """Add one scene: ground truth words (K) and masks (K, H, W), predictions (N, H, W)."""
        iou = mask_iou_matrix(gt, pred) if len(gt) and len(pred) else np.zeros((len(gt), 0))
        for k, w in enumerate(gt_words):
            if w not in self.counts:
                continue
            c = self.counts[w]
            c["instances"] += 1
            if iou.shape[1] and iou[k].max() >= thr:
                c["found"] += 1
                c["labelled"] += int(labels[int(iou[k].argmax())] == w)
        for j, lab in enumerate(labels):
            if lab in self.counts:
                self.counts[lab]["masks"] += 1
                hits = [k for k in range(len(gt)) if iou[k, j] >= thr]
                self.counts[lab]["true"] += int(any(gt_words[k] == lab for k in hits))

    def summary(self, groups: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
        """Per word and per group: recall, label accuracy, labelled recall, precision."""

        def rates(c: dict[str, int]) -> dict[str, Any]:
            def div(a: int, b: int) -> float | None:
                return round(a / b, 4) if b else None

            return {
                **c,
                "recall": div(c["found"], c["instances"]),
                "label_accuracy": div(c["labelled"], c["found"]),
                "labelled_recall": div(c["labelled"], c["instances"]),
                "precision": div(c["true"], c["masks"]),
            }

        out: dict[str, Any] = {"words": {w: rates(c) for w, c in self.counts.items()}}
        for name, words in (groups or {"all": self.words}).items():
            total = {k: sum(self.counts[w][k] for w in words if w in self.counts)
                     for k in ("instances", "found", "labelled", "masks", "true")}  # fmt: skip
            out[name] = rates(total)
        return out


def _gt_words(scene: Scene, kind: str) -> list[str]:
    if kind == "colour":
        return list(scene.colors)
    if kind == "shape":
        return list(scene.shapes)
    return [phrase(c, s) for c, s in zip(scene.colors, scene.shapes, strict=True)]


def evaluate(
    bundle: Path, out_json: Path | None, count: int, size: tuple[int, int] = (320, 320),
    precision: str | None = None, threads: int = 2, start: int = EVAL_SEED_START,
) -> dict[str, Any]:  # fmt: skip
    """Per-word recall and label accuracy of a demo YOLOE bundle on held-out scenes.

    Args:
        bundle: The exported bundle directory.
        out_json: Where to write the results (``None``: not written).
        count: Held-out scenes (seeds ``start ..``).
        size: Scene (width, height).
        precision: Detector precision (default: the bundle's).
        threads: onnxruntime threads.
        start: First seed (``>= 1_000_000``: never trained).

    Returns:
        The results: per vocabulary, per word and per group (trained / held-out phrases).
    """
    from edge.segmenter import Segmenter

    if start < EVAL_SEED_START:
        raise ValueError(f"start: held-out seeds begin at {EVAL_SEED_START}, got {start}")
    seg = Segmenter.load(bundle, precision=precision, threads=threads)
    seg.session = _CachedSession(seg.session)
    tallies = {name: WordTally(words) for name, (words, _) in VOCABULARIES.items()}
    vocab_raw = {name: seg.encode_words(list(words)) for name, (words, _) in VOCABULARIES.items()}
    t_seg, n_seg = 0.0, 0
    w, h = size
    for scene in _progress(iter_scenes(start, count, width=w, height=h), total=count,
                           desc="eval", unit="img"):  # fmt: skip
        for name, (words, kind) in VOCABULARIES.items():
            seg.set_vocabulary(list(words), vocab_raw[name])
            t = time.perf_counter()
            res = seg.segment(scene.image)  # the detector runs once per scene (cached session)
            t_seg += time.perf_counter() - t
            n_seg += 1
            tallies[name].add(_gt_words(scene, kind), scene.masks, res.mask, res.labels)
    groups = {"trained": TRAIN_PHRASES, "held_out": HELD_OUT}
    results: dict[str, Any] = {
        "bundle": str(bundle),
        "precision": seg.precision,
        "scenes": {"seeds": [start, start + count - 1], "size": [w, h]},
        "held_out_phrases": list(HELD_OUT),
        "thresholds": {"conf": seg.manifest.thresholds.conf, "iou": seg.manifest.thresholds.iou},
        "segment_ms_per_vocabulary": round(1000.0 * t_seg / max(n_seg, 1), 1),
        "vocabularies": {},
    }
    for name, (words, kind) in VOCABULARIES.items():
        g = {k: v for k, v in groups.items() if kind == "phrase" and set(v) & set(words)}
        results["vocabularies"][name] = tallies[name].summary({"all": words, **g})
    for name, r in results["vocabularies"].items():
        line = ", ".join(
            f"{g} recall {r[g]['recall']} label acc {r[g]['label_accuracy']}"
            for g in ("all", "trained", "held_out") if g in r
        )  # fmt: skip
        print(f"{name}: {line}")
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(out_json)
        print(f"wrote {out_json}")
    return results


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="work dir (default work/yoloe-demo)")
    p.add_argument("--images", type=int, default=1200, help="training scenes")
    p.add_argument("--val-images", type=int, default=100, help="validation scenes (900_000..)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--hours", type=float, default=0.0, help="ultralytics time limit")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--init-from", type=Path, metavar="ONNX",
        help="FastSAM detector whose weights start the backbone, neck, box and mask branches "
        "(frozen) (default: the FastSAM demo bundle's fastsam.fp32.onnx)",
    )  # fmt: skip
    p.add_argument(
        "--init-weights", type=Path, metavar="PT",
        help="continue from this script's weights (a new run: fresh schedule, same data)",
    )  # fmt: skip
    p.add_argument(
        "--from-scratch", action="store_true",
        help=f"no --init-from: a fresh net at --width (default {SCRATCH_WIDTH}), all trained",
    )  # fmt: skip
    p.add_argument("--width", type=float, help="width multiple with --from-scratch (0.25 = n)")
    p.add_argument(
        "--train", choices=tuple(FROZEN), default="all",
        help="what learns from the FastSAM start: embed (embedding branch and contrastive "
        "heads), neck (also layers 10-21), all (everything but the text adapter; default)",
    )  # fmt: skip
    p.add_argument(
        "--precisions", default="int8",
        help="detector precisions the bundle keeps: int8 (the shipped demo: fp32 is 13 MB "
        "and the demo bundles stay under 15 MB) or fp32,int8",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="training seed (ultralytics)")
    p.add_argument("--mosaic", type=float, default=0.0, help="mosaic probability (ultralytics)")
    p.add_argument("--lr0", type=float, default=0.002, help="AdamW learning rate")
    p.add_argument("--warmup-epochs", type=float, default=0.3)
    p.add_argument("--bundle-out", type=Path, help="export here (default <out>/bundle)")
    p.add_argument("--no-int8", action="store_true", help="export fp32 only")
    p.add_argument("--conf", type=float, default=0.25, help="the bundle's score threshold")
    p.add_argument("--export-only", type=Path, metavar="PT", help="only export PT")
    p.add_argument("--eval-images", type=int, default=100, help="held-out scenes")
    p.add_argument("--no-eval", action="store_true", help="train and export only")
    p.add_argument("--eval-only", type=Path, metavar="BUNDLE", help="only evaluate BUNDLE")
    p.add_argument("--smoke", action="store_true", help="1 epoch on 8 tiny images (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.images, args.val_images, args.epochs, args.hours = 8, 4, 1, 0.0
        args.imgsz, args.batch, args.workers, args.eval_images = 160, 4, 0, 2
    if args.width is None:
        args.width = SCRATCH_WIDTH if args.from_scratch else WIDTH
    if not args.from_scratch and abs(args.width - WIDTH) > 1e-9:
        p.error(f"--width: a detector started from --init-from has its width ({WIDTH})")
    if args.init_from is None and not args.from_scratch:
        args.init_from = demo_text_bundle() / "fastsam.fp32.onnx"
    if args.precisions not in ("int8", "fp32,int8"):
        p.error(f"--precisions: expected int8 or fp32,int8, got {args.precisions!r}")
    if args.out is None:
        args.out = REPO_ROOT / "work" / ("yoloe-demo-smoke" if args.smoke else "yoloe-demo")
    args.out = args.out.resolve()
    if args.bundle_out is None:
        args.bundle_out = args.out / "bundle"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = (args.imgsz, args.imgsz)
    if args.eval_only is not None:
        evaluate(args.eval_only, args.out / "eval.json", args.eval_images, size)
        return 0
    if args.export_only is not None:
        export(args.export_only, args.bundle_out, args.imgsz, True, args.precisions == "int8",
               args.conf)  # fmt: skip
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    embeddings = text_embeddings(args.out)
    data_yaml = write_dataset(
        args.out / "data", args.images, args.val_images, args.imgsz, args.imgsz,
        names=TRAIN_PHRASES, classify=classify,
    )  # fmt: skip
    weights = train(args, data_yaml, embeddings)
    print(f"weights: {weights}")
    int8_only = args.precisions == "int8" and not args.smoke  # smoke: fp32 only, quick
    bundle = export(weights, args.bundle_out, args.imgsz, not (args.no_int8 or args.smoke),
                    int8_only, args.conf)  # fmt: skip
    print(f"bundle: {bundle}")
    if not args.no_eval:
        evaluate(bundle, args.out / "eval.json", args.eval_images, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
