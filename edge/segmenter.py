"""``Segmenter``: a loaded bundle plus the FastSAM pipeline (everything mode and prompts)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edge.bundle import NO_CLIP_HINT, BundleManifest, YoloeSection, read_manifest, verify_file
from edge.clip import ClipEncoder, TextTower
from edge.errors import BundleError, InputError
from edge.lru import WordCache
from edge.postprocess import Detections, prepare_detections
from edge.preprocess import LetterboxInfo, letterbox, normalize_image
from edge.prompts import Prompt, TextPrompt, check_prompts
from edge.selection import select, selection_to_masks
from edge.session import create_session, default_threads
from edge.textmatch import CachedTextEncoder, TextOptions
from edge.tokenizer import ClipTokenizer
from edge.types import Masks
from edge.yoloe import (
    OpenVocabFrame,
    Vocabulary,
    YoloeHead,
    check_embeddings,
    check_names,
    vocabulary_detections,
)

_LOGGER = logging.getLogger(__name__)


def _check_threshold(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name}: expected a finite number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{name}: expected a value in [0, 1], got {value!r}")
    return float(value)


@dataclass
class Segmenter:
    """A FastSAM bundle loaded into an onnxruntime session.

    Build it with :meth:`load`. It keeps no per-frame state, so one instance can serve a stream
    of frames (calls are not thread-safe only in the sense that onnxruntime serialises them).
    The CLIP encoder of text prompts is loaded on the first text prompt and kept, with a
    bounded cache of text embeddings (:meth:`text_encoder`); its sessions are created when
    first needed (the text session only for texts never seen, and dropped after them).

    Attributes:
        bundle_dir: Directory of the bundle.
        manifest: Parsed ``bundle.json``.
        precision: Detector precision in use (``fp32`` or ``int8``).
        threads: Intra-op threads of the session.
        session: The detector session.
        text: How text prompts choose their masks (:class:`edge.textmatch.TextOptions`; its
            ``threshold`` defaults to the bundle's measured ``clip.text_threshold``). Replace it
            whole, e.g. ``seg.text = dataclasses.replace(seg.text, prefilter="score")``.
        clip_precision: CLIP encoder precision (``None``: the detector's :attr:`precision` where
            the bundle's CLIP has it, so an int8 pipeline reads no fp32 file, else the bundle's
            CLIP default); set before the first text prompt.
        assembly_workers: Threads that assemble masks in parallel (numpy releases the GIL in
            the per-mask matmul and resampling); ``None`` = ``threads``, 1 = serial. The
            detector is idle meanwhile, so its cores are free.
        clip_keep_text: Keep CLIP's text session loaded (``False``, the default: created for
            texts never seen and dropped after encoding them, so it is never resident while
            crops or the dense map are encoded; seen texts come from the embedding cache, and
            with :attr:`state_dir` from disk after a restart); set before the first text.
        state_dir: Where the text embeddings a text tower computed are persisted (YOLOE's
            words, CLIP's prompts; ``None``: memory only); set before the first new text.
        text_tower_precision: Precision of the YOLOE text tower (``None``: the bundle's
            default); set before the first new word.
        text_tower_keep: Keep the YOLOE text tower's session loaded after a new word (``False``
            frees it after each encoding: less resident memory, one load per new word).
        yoloe: The bundle's typed ``yoloe`` section (``None``: a FastSAM bundle).
    """

    bundle_dir: Path
    manifest: BundleManifest
    precision: str
    threads: int
    session: ort.InferenceSession
    text: TextOptions = field(default_factory=TextOptions)
    clip_precision: str | None = None
    assembly_workers: int | None = None
    clip_keep_text: bool = False
    state_dir: Path | None = None
    text_tower_precision: str | None = None
    text_tower_keep: bool = False
    yoloe: YoloeSection | None = None
    _head: YoloeHead | None = field(default=None, init=False, repr=False)
    _vocab: Vocabulary | None = field(default=None, init=False, repr=False)
    _words: WordCache | None = field(default=None, init=False, repr=False)
    _words_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _tower: TextTower | None = field(default=None, init=False, repr=False)
    _text_encoder: CachedTextEncoder | None = field(default=None, init=False, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _pool_size: int = field(default=1, init=False, repr=False)

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        precision: str | None = None,
        threads: int | None = None,
        verify: bool = True,
    ) -> Segmenter:
        """Load a bundle.

        Args:
            bundle_dir: Bundle directory (with ``bundle.json``); the embedded demos are
                ``edge.demo.demo_bundle("demo")`` and ``demo_bundle("demo-yoloe")``.
            precision: ``"fp32"`` or ``"int8"``; default from the manifest.
            threads: onnxruntime intra-op threads; default ``OMP_NUM_THREADS`` or all cores.
            verify: Check the detector's size and sha256 against the manifest.

        Raises:
            BundleError: Missing/corrupt bundle, unknown precision, or a model whose input
                does not match the manifest.
        """
        bundle_dir = Path(bundle_dir)
        manifest = read_manifest(bundle_dir)
        precision = precision or manifest.default_precision
        name = manifest.detector_file(precision)
        path = verify_file(bundle_dir, manifest, name) if verify else bundle_dir / name
        threads = threads if threads is not None else default_threads()
        session = create_session(path, threads=threads)
        _check_session(session, manifest, path)
        _LOGGER.info("loaded %s (%s, %d threads)", path, precision, threads)
        if precision == "int8":
            from edge.cpu import int8_class

            cpu = int8_class()
            if cpu.saturates or not cpu.int8_pays_off:
                _LOGGER.warning("int8 on this CPU: %s", cpu.describe())
        threshold = manifest.clip.text_threshold if manifest.clip else None
        seg = cls(
            bundle_dir, manifest, precision, threads, session, TextOptions(threshold=threshold),
            yoloe=manifest.yoloe,
        )  # fmt: skip
        if seg.yoloe is not None:
            seg._load_open_vocabulary(verify)
        return seg

    # ----------------------------------------------------------------------------------------
    # Open vocabulary (YOLOE bundles)
    # ----------------------------------------------------------------------------------------

    def _load_open_vocabulary(self, verify: bool) -> None:
        """The head's text side and the default vocabulary of a YOLOE bundle."""
        section = self.yoloe
        assert section is not None
        head_path = (
            verify_file(self.bundle_dir, self.manifest, section.head)
            if verify
            else self.bundle_dir / section.head
        )
        self._head = YoloeHead.load(head_path)
        if self._head.embed_dim != section.embed_dim:
            raise BundleError(
                f"yoloe head: embedding size {self._head.embed_dim} != bundle.json "
                f"yoloe.embed_dim {section.embed_dim}"
            )
        if section.vocabulary and section.vocabulary_file:
            path = verify_file(self.bundle_dir, self.manifest, section.vocabulary_file)
            try:
                raw = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise BundleError(f"yoloe vocabulary: cannot read {str(path)!r}: {exc}") from exc
            try:
                self.set_vocabulary(list(section.vocabulary), raw)
            except InputError as exc:
                raise BundleError(f"yoloe vocabulary: {exc}") from exc

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The words :meth:`segment` finds (empty for FastSAM bundles and before any is set)."""
        return self._vocab.names if self._vocab is not None else ()

    @property
    def vocabulary_embeddings(self) -> NDArray[np.float32] | None:
        """The (K, D) raw embeddings of :attr:`vocabulary` (``None`` without one), e.g. to set
        the bundle's default vocabulary again without a text tower."""
        return self._vocab.raw if self._vocab is not None else None

    def set_vocabulary(
        self, names: Sequence[str], embeddings: NDArray[np.float32] | None = None
    ) -> None:
        """Set the words an open-vocabulary (YOLOE) bundle finds; takes effect on the next frame.

        Args:
            names: Distinct, non-blank words or phrases (stripped), at least one.
            embeddings: Optional (len(names), D) float32 text-model outputs *before* the head's
                text adapter (ultralytics ``get_text_pe(names, without_reprta=True)``); ``None``
                encodes ``names`` with the bundle's text tower (cached, see
                :meth:`encode_words`).

        Raises:
            InputError: Bad names or embeddings.
            BundleError: A FastSAM bundle, or ``embeddings=None`` on a bundle without a text
                tower.
        """
        head = self._require_head("set_vocabulary")
        words = check_names(names)
        if embeddings is None:
            raw = self.encode_words(words)
        else:
            raw = check_embeddings(embeddings, len(words), head.embed_dim)
        self._vocab = Vocabulary.build(head, words, raw)

    def _require_head(self, what: str) -> YoloeHead:
        if self._head is None:
            raise BundleError(
                f"{what}: {str(self.bundle_dir)!r} is a FastSAM bundle (class-agnostic); a "
                "vocabulary needs a YOLOE bundle (fastsam-export yoloe-*-seg.pt)"
            )
        return self._head

    def encode_words(self, words: Sequence[str]) -> NDArray[np.float32]:
        """Raw (K, D) embeddings of ``words`` with the bundle's text tower.

        Words seen before come from the cache (memory, and ``state_dir`` on disk); the others
        are encoded in one text-tower call. Thread-safe: a service encodes a new vocabulary in
        its own thread while the worker may encode a text prompt's words.

        Raises:
            BundleError: The bundle has no text tower.
        """
        self._require_head("encode_words")
        with self._words_lock:
            raw, _ = self.word_cache().encode(list(words), lambda w: self._text_tower().encode(w))
        return raw

    def word_cache(self) -> WordCache:
        """The word-embedding cache (created on first use, on disk under :attr:`state_dir`)."""
        if self._words is None:
            section = self.yoloe
            directory = None
            if self.state_dir is not None and section is not None and section.text is not None:
                text = section.text
                prec = self.text_tower_precision or text.default_precision
                digest = self.manifest.files[text.files[prec]].sha256[:16]
                directory = Path(self.state_dir) / "words" / digest
            self._words = WordCache(directory)
        return self._words

    def _text_tower(self) -> TextTower:
        if self._tower is not None:
            return self._tower
        section = self.yoloe
        if section is None or section.text is None:
            raise BundleError(
                f"words: {str(self.bundle_dir)!r} has no text tower; pass the embeddings "
                "(set_vocabulary(names, embeddings)) or re-export with --text-weights "
                "mobileclip_blt.ts (v8/11) / mobileclip2_b.ts (26)"
            )
        text = section.text
        prec = self.text_tower_precision or text.default_precision
        if prec not in text.precisions:
            raise BundleError(
                f"text tower precision {prec!r} is not in this bundle ({list(text.precisions)})"
            )
        path = verify_file(self.bundle_dir, self.manifest, text.files[prec])
        verify_file(self.bundle_dir, self.manifest, str(text.tokenizer.get("bpe")))
        tokenizer = ClipTokenizer.from_manifest(self.bundle_dir, text.tokenizer)
        self._tower = TextTower(
            path, tokenizer, section.embed_dim, self.threads, keep=self.text_tower_keep
        )
        return self._tower

    def _text_vocabulary(self, prompts: list[Prompt]) -> Vocabulary | None:
        """On a YOLOE bundle, the vocabulary of the text prompts (``None``: none given).

        Raises:
            InputError: Text prompts mixed with point/box prompts (send them separately).
        """
        texts = [p.text for p in prompts if isinstance(p, TextPrompt)]
        if not texts or self.yoloe is None:
            return None
        if len(texts) != len(prompts):
            raise InputError(
                "prompt: on an open-vocabulary (YOLOE) bundle a text prompt finds every instance "
                "of its phrase; send point/box prompts in a separate request"
            )
        head = self._require_head("text prompt")
        words = list(dict.fromkeys(t.strip() for t in texts))
        return Vocabulary.build(head, words, self.encode_words(words))

    def _open_vocab_text_result(
        self, dets: Detections, prompts: list[Prompt], prompt_ms: float
    ) -> Masks:
        """All instances of each text prompt's phrase, with ``prompt_index``."""
        first = {}
        for k, p in enumerate(prompts):
            assert isinstance(p, TextPrompt)
            first.setdefault(p.text.strip(), k)
        assert dets.class_id is not None
        index = [first[dets.names[c]] for c in dets.class_id.tolist()]
        t0 = time.perf_counter()
        result = dets.to_masks(data={"prompt_index": np.asarray(index, dtype=np.int64)})
        timings = dict(dets.timings)
        timings["postprocess"] = timings.get("postprocess", 0.0) + (time.perf_counter() - t0) * 1e3
        result.timings.update(timings)
        result.timings["prompt"] = prompt_ms
        result.metadata.update(dets.metadata)
        result.metadata["prompt"] = [p.to_json() for p in prompts]
        found = set(index)
        result.metadata["prompt_notes"] = [
            f"prompt {k} (text {p.text!r}): selected nothing: no instance scored above conf"
            for k, p in enumerate(prompts)
            if k not in found and isinstance(p, TextPrompt) and first[p.text.strip()] == k
        ]
        return result

    def assembly_pool(self) -> tuple[ThreadPoolExecutor | None, int]:
        """The mask-assembly pool (created on first use) and its size; ``(None, 1)`` = serial."""
        workers = self.assembly_workers if self.assembly_workers is not None else self.threads
        if workers <= 1:
            return None, 1
        if self._pool is None or self._pool_size != workers:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fastsam-assemble")
            self._pool_size = workers
        return self._pool, workers

    @property
    def input_name(self) -> str:
        """Name of the detector input tensor."""
        return self.manifest.input.name

    def _thresholds(
        self, conf: float | None, iou: float | None, max_det: int | None
    ) -> tuple[float, float, int]:
        th = self.manifest.thresholds
        conf_t = _check_threshold("conf", th.conf if conf is None else conf)
        iou_t = _check_threshold("iou", th.iou if iou is None else iou)
        max_det = th.max_det if max_det is None else max_det
        if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 0:
            raise InputError(f"max_det: expected a non-negative integer, got {max_det!r}")
        return conf_t, iou_t, max_det

    def detect(
        self,
        image: NDArray[np.uint8],
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
    ) -> Detections:
        """Run the detector once; masks are assembled later, on demand.

        The returned :class:`Detections` can be prompted any number of times with
        :meth:`select` without running the detector again (a camera service keeps the last few
        frames' detections for prompts from a browser). Text prompts on the same detections
        reuse the crops' CLIP image embeddings, so only the first one encodes images.

        Args:
            image: (H, W, 3) uint8 BGR image (gray (H, W) and BGRA (H, W, 4) are converted).
            conf: Score threshold (strict ``>``); default from the bundle (0.4).
            iou: NMS IoU threshold; default from the bundle (0.9).
            max_det: Maximum masks; default from the bundle (300).

        Returns:
            The frame's detections (boxes, scores, coefficients, prototypes, the image) with
            ``timings`` (``preprocess``, ``infer``, ``postprocess`` = decode and NMS, in ms).

        Raises:
            InputError: Bad image or threshold.
        """
        thresholds = self._thresholds(conf, iou, max_det)
        t0 = time.perf_counter()
        image, tensor, info = self._preprocess(image)
        return self._detect(image, tensor, info, thresholds, (time.perf_counter() - t0) * 1e3)

    def _preprocess(
        self, image: NDArray[np.uint8]
    ) -> tuple[NDArray[np.uint8], NDArray[np.float32], LetterboxInfo]:
        """The checked BGR image, its letterboxed input tensor and the letterbox geometry."""
        image = normalize_image(image)
        spec = self.manifest.input
        tensor, info = letterbox(image, spec.imgsz, spec.stride, auto=spec.dynamic)
        return image, tensor, info

    def _detect(
        self,
        image: NDArray[np.uint8],
        tensor: NDArray[np.float32],
        info: LetterboxInfo,
        thresholds: tuple[float, float, int],
        preprocess_ms: float,
        vocab: Vocabulary | None = None,
    ) -> Detections:
        """Inference and post-processing stage (a) on a preprocessed frame (``vocab``: the
        words a YOLOE bundle scores, default its vocabulary)."""
        conf_t, iou_t, max_det = thresholds
        t1 = time.perf_counter()
        outputs = self.session.run(None, {self.manifest.input.name: tensor})
        t2 = time.perf_counter()
        if self.yoloe is None:
            output0, protos = outputs
            dets = prepare_detections(
                output0, protos, info.input_hw, info.source_hw, conf_t, iou_t, max_det
            )
        else:
            vocab = vocab or self._vocab
            if vocab is None:
                raise InputError(
                    "this YOLOE bundle has no vocabulary: call set_vocabulary(['person', ...]) "
                    "or give a text prompt (or re-export with --vocab)"
                )
            assert self.yoloe is not None
            dets = vocabulary_detections(
                outputs, info.input_hw, info.source_hw, self.yoloe, vocab, thresholds
            )
            dets.cache(OpenVocabFrame).keep(outputs, info.input_hw)
        dets.pool, dets.workers = self.assembly_pool()
        dets.image = image
        dets.metadata = {
            "thresholds": {"conf": conf_t, "iou": iou_t, "max_det": max_det},
            "input_hw": info.input_hw,
        }
        dets.timings = {
            "preprocess": preprocess_ms,
            "infer": (t2 - t1) * 1e3,
            "postprocess": (time.perf_counter() - t2) * 1e3,
        }
        return dets

    def select(
        self,
        detections: Detections,
        prompt: Prompt | Sequence[Prompt] | None = None,
    ) -> Masks:
        """Apply prompts (or everything mode) to detections from :meth:`detect`.

        Args:
            detections: One frame's detections (reusable: nothing here changes what they
                select, only caches assembled masks and CLIP crop embeddings on them).
            prompt: As in :meth:`segment`.

        Returns:
            As :meth:`segment`. ``timings`` holds the detection's ``preprocess`` and ``infer``
            (measured when :meth:`detect` ran), ``postprocess`` (its decode and NMS plus the
            masks assembled here) and, with prompts, ``prompt``.

        Raises:
            InputError: Bad prompt (e.g. a point off the frame), or detections without their
                image for a text prompt.
            BundleError: A text prompt on a bundle without CLIP.
        """
        prompts = check_prompts(prompt, detections.source_hw)
        t0 = time.perf_counter()
        vocab = self._text_vocabulary(prompts)
        if vocab is not None:
            frame = detections.cache(OpenVocabFrame)
            if frame.outputs is None or frame.input_hw is None:
                raise InputError("text: these detections carry no YOLOE outputs (use detect)")
            th = detections.metadata.get("thresholds") or {}
            thresholds = self._thresholds(th.get("conf"), th.get("iou"), th.get("max_det"))
            assert self.yoloe is not None
            dets = vocabulary_detections(
                frame.outputs, frame.input_hw, detections.source_hw, self.yoloe, vocab, thresholds
            )
            dets.pool, dets.workers = self.assembly_pool()
            dets.image, dets.metadata = detections.image, dict(detections.metadata)
            dets.timings = dict(detections.timings)
            return self._open_vocab_text_result(dets, prompts, (time.perf_counter() - t0) * 1e3)
        has_text = any(isinstance(p, TextPrompt) for p in prompts)
        if has_text and detections.image is None:
            raise InputError("text: these detections carry no image (use Segmenter.detect)")
        encoder, load_clip_ms = self._timed_encoder(prompts)
        return self._select(detections, prompts, encoder, load_clip_ms)

    def _select(
        self,
        dets: Detections,
        prompts: Sequence[Prompt],
        encoder: CachedTextEncoder | None,
        load_clip_ms: float = 0.0,
    ) -> Masks:
        ta = time.perf_counter()
        if prompts:
            selection = select(dets, prompts, dets.image, encoder, self.text)
            tb = time.perf_counter()
            result = selection_to_masks(dets, selection)
        else:
            tb = ta
            result = dets.to_masks()
        tc = time.perf_counter()
        timings = dict(dets.timings)
        timings["postprocess"] = timings.get("postprocess", 0.0) + (tc - tb) * 1e3
        result.timings.update(timings)
        result.metadata.update(dets.metadata)
        if load_clip_ms:
            result.timings["load_clip"] = load_clip_ms
        if prompts:
            result.timings["prompt"] = (tb - ta) * 1e3
            result.metadata["prompt"] = [p.to_json() for p in prompts]
            result.metadata["prompt_notes"] = list(selection.notes)
            if selection.text_scores:
                result.metadata["text_scores"] = [
                    {"prompt_index": k, **v} for k, v in sorted(selection.text_scores.items())
                ]
        return result

    def segment(
        self,
        image: NDArray[np.uint8],
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        prompt: Prompt | Sequence[Prompt] | None = None,
    ) -> Masks:
        """Segment everything in one image, or only what the prompts select.

        ``segment(image, ..., prompt=p)`` is ``select(detect(image, ...), p)``, with the
        prompts checked against the image before inference.

        Args:
            image: (H, W, 3) uint8 BGR image (gray (H, W) and BGRA (H, W, 4) are converted).
            conf: Score threshold (strict ``>``); default from the bundle (0.4).
            iou: NMS IoU threshold; default from the bundle (0.9).
            max_det: Maximum masks; default from the bundle (300).
            prompt: One :mod:`edge.prompts` prompt or a list of them (semantics in
                ``docs/prompts.md``); ``None`` or ``[]`` = everything mode.

        Returns:
            :class:`~edge.types.Masks` in score-descending order, with ``timings`` in ms. With
            prompts: only the selected masks (plus one merged mask per ``official`` point
            prompt, last), ``data["prompt_index"]`` (first prompt selecting each mask),
            ``metadata["prompt"]`` (the prompts as JSON), ``metadata["prompt_notes"]`` (why a
            prompt selected nothing), ``timings["prompt"]`` (selection, including masks
            assembled to decide it; assembling the remaining output masks counts as
            ``postprocess``). Text prompts add per-mask ``data["clip_similarity"]`` and
            ``data["clip_probability"]``, ``metadata["text_scores"]`` (best match per text
            prompt, selected or not) and, on the frame that loads CLIP,
            ``timings["load_clip"]``.

        Raises:
            InputError: Bad image, threshold or prompt (checked before inference).
            BundleError: A text prompt on a bundle without CLIP.
        """
        thresholds = self._thresholds(conf, iou, max_det)
        t0 = time.perf_counter()
        # each stage entered once: preprocess, prompts (checked against the frame, before
        # inference), CLIP for text, the detector and post-processing, then selection
        image, tensor, info = self._preprocess(image)
        prompts = check_prompts(prompt, info.source_hw)
        tv = time.perf_counter()
        vocab = self._text_vocabulary(prompts)  # YOLOE: text prompts are its vocabulary
        if vocab is not None:
            words_ms = (time.perf_counter() - tv) * 1e3
            preprocess_ms = (time.perf_counter() - t0) * 1e3 - words_ms
            dets = self._detect(image, tensor, info, thresholds, preprocess_ms, vocab)
            return self._open_vocab_text_result(dets, prompts, words_ms)
        encoder, load_clip_ms = self._timed_encoder(prompts)
        preprocess_ms = (time.perf_counter() - t0) * 1e3 - load_clip_ms
        dets = self._detect(image, tensor, info, thresholds, preprocess_ms)
        return self._select(dets, prompts, encoder, load_clip_ms)

    def _timed_encoder(self, prompts: Sequence[Prompt]) -> tuple[CachedTextEncoder | None, float]:
        """The CLIP encoder if a prompt needs it, and its load time in ms (0 when loaded
        before): a one-off cost, reported as ``load_clip``, not as preprocessing."""
        if not any(isinstance(p, TextPrompt) for p in prompts):
            return None, 0.0
        fresh = self._text_encoder is None
        t0 = time.perf_counter()
        encoder = self.text_encoder()
        return encoder, (time.perf_counter() - t0) * 1e3 if fresh else 0.0

    def text_encoder(self) -> CachedTextEncoder:
        """The bundle's CLIP encoder (loaded on first use and kept, text embeddings cached).

        Raises:
            BundleError: The bundle has no CLIP section.
        """
        if self._text_encoder is not None:
            return self._text_encoder
        if not self.manifest.has_text:
            raise BundleError(f"text prompt: {str(self.bundle_dir)!r}: {NO_CLIP_HINT}")
        clip = self.manifest.clip
        precision = self.clip_precision
        if precision is None and clip is not None and self.precision in clip.precisions:
            precision = self.precision
        encoder = ClipEncoder.load(
            self.bundle_dir,
            self.manifest,
            precision,
            self.threads,
            keep_text=self.clip_keep_text,
        )
        directory = None
        if self.state_dir is not None and clip is not None:  # per text tower file
            digest = self.manifest.files[clip.file("text", encoder.precision)].sha256[:16]
            directory = Path(self.state_dir) / "clip-texts" / digest
        self._text_encoder = CachedTextEncoder(encoder, directory=directory)
        return self._text_encoder

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """The text prompts' caches once CLIP is loaded: ``text_embeddings`` and ``bpe`` (the
        tokenizer's words), each :meth:`edge.lru.BoundedLRU.stats`; empty before."""
        enc = self._text_encoder
        if enc is None:
            return {}
        out = {"text_embeddings": enc.cache_stats}
        bpe = enc.tokenizer_cache_stats
        if bpe is not None:
            out["bpe"] = bpe
        return out


def _check_session(session: ort.InferenceSession, manifest: BundleManifest, path: Path) -> None:
    """The model's I/O must agree with the manifest (catches a mixed-up bundle)."""
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != manifest.input.name:
        raise BundleError(
            f"model: {str(path)!r} inputs {[i.name for i in inputs]} do not match bundle.json "
            f"input name {manifest.input.name!r}"
        )
    section = manifest.yoloe
    expected = 2 if section is None else 3
    if len(outputs) != expected:
        raise BundleError(
            f"model: {str(path)!r} has {len(outputs)} outputs, expected {expected}"
            + ("" if section is None else " (YOLOE: output0, embeddings, protos)")
        )
    shape = inputs[0].shape
    if manifest.input.dynamic and all(isinstance(v, int) for v in shape[2:]):
        raise BundleError(
            f"bundle.json input.dynamic: true, but the model {str(path)!r} has the static "
            f'input shape {list(shape)}: set "dynamic": false (or export a dynamic model)'
        )
    if not manifest.input.dynamic:
        expected = [1, 3, *manifest.input.imgsz]
        if list(shape) != expected:
            raise BundleError(
                f"model: {str(path)!r} input shape {shape} does not match bundle.json {expected}"
            )
    ch = outputs[0].shape[1]
    if section is not None:
        dim = outputs[1].shape[1]
        if isinstance(dim, int) and dim != section.embed_dim:
            raise BundleError(
                f"model: {str(path)!r} embeddings have {dim} channels, bundle.json yoloe."
                f"embed_dim is {section.embed_dim}"
            )
        if isinstance(ch, int) and ch != 4 + manifest.num_coefficients:
            raise BundleError(
                f"model: {str(path)!r} output0 has {ch} channels, expected "
                f"{4 + manifest.num_coefficients} (box + coefficients)"
            )
        return
    if isinstance(ch, int) and ch != 5 + manifest.num_coefficients:
        raise BundleError(
            f"model: {str(path)!r} output0 has {ch} channels, expected "
            f"{5 + manifest.num_coefficients} (one class + "
            f"{manifest.num_coefficients} coefficients)"
        )
