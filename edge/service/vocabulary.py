"""The open vocabulary of a running service: the words a YOLOE bundle finds, changed at runtime.

Where the vocabulary comes from, first match wins:

1. the one set at runtime (``POST /vocabulary``, the page's box), saved in
   ``<service.state_dir>/vocabulary.json``, unless ``processing.vocabulary`` was edited since
   (the file remembers the configured vocabulary it overrode: an edited config is a newer
   decision, and wins);
2. ``processing.vocabulary`` in the config file (never written by the service);
3. the bundle's default vocabulary (``fastsam-export ... --vocab``).

A change is validated by the config's own validator (:func:`edge.service.config.vocabulary`),
then encoded in this stage's own thread (new words cost one text-tower call for all of them;
words seen before come from the segmenter's word cache, on disk under the state directory):
the HTTP thread waits at most :data:`ENCODE_WAIT_S` and answers 202 when encoding takes longer.
The encoded vocabulary is handed to the worker, which swaps it in between two frames
(:meth:`VocabularyStage.apply`): no frame sees half a vocabulary. ``[]`` goes back to the
configured (else the bundle's) vocabulary and forgets the saved one.

A FastSAM bundle is class-agnostic: a configured vocabulary stops the service at start (a
configuration error naming ``processing.vocabulary``), ``POST /vocabulary`` answers 409.

Endpoints (:func:`vocabulary_routes`, behind the API's usual checks: ``Host``, token or page
session, JSON bodies, ``http.max_body_bytes``):

* ``GET /vocabulary``: :meth:`VocabularyStage.facts`.
* ``POST /vocabulary`` ``{"vocabulary": ["person", "dog"]}``: 200 with the facts once encoded
  (it applies from the next frame), 202 while still encoding, 400 naming the field, 409 on a
  bundle without a vocabulary (or without a text tower for new words), 503 while another
  change is being encoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.errors import BundleError, FastSAMEdgeError, InputError
from edge.service.config import MAX_VOCABULARY_WORDS, MAX_WORD_CHARS, ConfigError, vocabulary
from edge.service.http import HttpError, Route, load_json_object
from edge.service.protocols import HasVocabulary, bundle_of
from edge.service.state import StateFile
from edge.service.telemetry import Metrics

_LOGGER = logging.getLogger("edge.service")

STATE_NAME = "vocabulary.json"
"""The saved runtime vocabulary, in the state directory."""

ENCODE_WAIT_S = 30.0
"""Longest an HTTP request waits for new words to be encoded (then 202: it goes on)."""

FASTSAM_WHY = (
    "this bundle is FastSAM (class-agnostic: masks have no names); a vocabulary needs an "
    "open-vocabulary YOLOE bundle (fastsam-export yoloe-11s-seg.pt)"
)

Resolved = tuple[tuple[str, ...], NDArray[np.float32]]
"""A vocabulary ready for the worker: its words and their (K, D) raw embeddings."""


def label_counts(doc: dict[str, Any]) -> dict[str, int] | None:
    """Masks per vocabulary word of a result JSON (every word, 0 included), or ``None`` for a
    class-agnostic result (no ``vocabulary``)."""
    words = doc.get("vocabulary") or []
    if not words:
        return None
    counts = dict.fromkeys(words, 0)
    for m in doc.get("masks", []):
        label = m.get("label")
        if label in counts:
            counts[label] += 1
    return counts


class VocabularyStage:
    """The vocabulary's state in a running service; see the module docstring.

    Args:
        configured: ``processing.vocabulary`` (validated; ``[]`` = the bundle's).
        state_dir: The service's state directory.
        metrics: ``fastsam_vocabulary_changes_total``, ``fastsam_errors_total{kind=...}``.
        on_change: Called with the new words once a change is accepted (MQTT entities);
            errors it raises are logged.

    Attributes:
        kind: ``"yoloe"``, ``"fastsam"``, or ``""`` for a segmenter not loaded from a bundle.
        family: The YOLOE family (``v8``, ``11``, ``26``), else ``""``.
        words: The accepted vocabulary (frames use it from the next one).
        active: The vocabulary the worker last swapped in.
        source: Where :attr:`words` came from: ``runtime``, ``config`` or ``bundle``.
        last_error: Why the last change failed (``""`` after a success).
    """

    def __init__(
        self,
        configured: list[str] | tuple[str, ...],
        state_dir: str | Path,
        metrics: Metrics | None = None,
        on_change: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self.configured = tuple(configured)
        self.state = StateFile(Path(state_dir) / STATE_NAME, "vocabulary")
        self.metrics = metrics or Metrics()
        self.on_change = on_change
        self.kind = ""
        self.family = ""
        self.bundle_name = ""
        self.words: tuple[str, ...] = ()
        self.active: tuple[str, ...] = ()
        self.source = ""
        self.last_error = ""
        self._segmenter: HasVocabulary | None = None
        self._default: Resolved | None = None
        self._pending: Resolved | None = None
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # start -------------------------------------------------------------------------------

    def start(self, segmenter: object) -> None:
        """Choose the vocabulary (saved, configured, the bundle's) and set it on ``segmenter``
        now (before the first frame).

        Raises:
            ConfigError: ``processing.vocabulary`` set on a FastSAM bundle, words that cannot
                be encoded (no text tower), or a YOLOE bundle without any vocabulary.
        """
        manifest = bundle_of(segmenter)
        self.bundle_name = manifest.name if manifest is not None else type(segmenter).__name__
        if not isinstance(segmenter, HasVocabulary) or segmenter.yoloe is None:
            self.kind = "fastsam" if manifest is not None else ""
            if self.configured:
                raise ConfigError(
                    f"processing.vocabulary: the bundle {self.bundle_name!r} is "
                    f"{'a FastSAM bundle' if manifest is not None else 'not an open-vocabulary'}"
                    " (class-agnostic, masks have no names); remove the key, or load a YOLOE "
                    "bundle (fastsam-export yoloe-11s-seg.pt --vocab ...)"
                )
            saved = self.state.load()
            if saved and saved.get("vocabulary"):
                _LOGGER.info(
                    "vocabulary: %s has a saved vocabulary, unused with the class-agnostic "
                    "bundle %r (kept for a YOLOE bundle)",
                    self.state.path,
                    self.bundle_name,
                )
            return
        self.kind, self.family = "yoloe", segmenter.yoloe.family
        self._segmenter = segmenter
        raw = segmenter.vocabulary_embeddings
        if segmenter.vocabulary and raw is not None:
            self._default = (tuple(segmenter.vocabulary), np.array(raw, np.float32))
        saved = self._saved_words()
        if saved:
            try:
                self._set_now(saved, "runtime")
                return
            except FastSAMEdgeError as exc:
                self._failed(f"the saved vocabulary {list(saved)} cannot be used: {exc}")
        if self.configured:
            try:
                self._set_now(self.configured, "config")
            except FastSAMEdgeError as exc:
                raise ConfigError(f"processing.vocabulary: {exc}") from None
            return
        if self._default is None:
            raise ConfigError(
                f"processing.vocabulary: the YOLOE bundle {self.bundle_name!r} has no default "
                'vocabulary (exported without --vocab); set processing.vocabulary = ["person", '
                '"dog"]'
            )
        self.words = self.active = self._default[0]
        self.source = "bundle"
        _LOGGER.info("vocabulary: %s (the bundle's)", ", ".join(self.words))

    def _saved_words(self) -> tuple[str, ...] | None:
        """The saved runtime vocabulary, unless unusable or overridden by an edited config."""
        doc = self.state.load()
        if doc is None:
            return None
        try:
            words = vocabulary(f"{self.state.path}: vocabulary", doc.get("vocabulary"))
        except ConfigError as exc:
            _LOGGER.warning("state: ignoring the saved vocabulary: %s", exc)
            return None
        if doc.get("configured") != list(self.configured):
            _LOGGER.info(
                "vocabulary: processing.vocabulary was changed since the vocabulary %s was set "
                "at runtime; the configuration's wins (the saved one is forgotten)",
                words,
            )
            self.state.remove()
            return None
        return tuple(words) or None

    def _resolve(self, words: tuple[str, ...]) -> Resolved:
        """Words -> (words, raw embeddings): the bundle's own for its default vocabulary,
        else the segmenter's word cache and text tower (one call for the new words)."""
        if self._default is not None and words == self._default[0]:
            return self._default
        assert self._segmenter is not None
        return words, self._segmenter.encode_words(list(words))

    def _set_now(self, words: tuple[str, ...], source: str) -> None:
        names, raw = self._resolve(words)
        assert self._segmenter is not None
        self._segmenter.set_vocabulary(list(names), raw)
        self.words = self.active = names
        self.source = source
        _LOGGER.info("vocabulary: %s (%s)", ", ".join(names), _SOURCES[source])

    def _failed(self, why: str) -> None:
        self.last_error = why
        self.metrics.inc("fastsam_errors_total", kind="vocabulary")
        _LOGGER.error("vocabulary: %s", why)

    # changes -----------------------------------------------------------------------------

    def request(self, value: Any, wait_s: float = ENCODE_WAIT_S) -> tuple[int, dict[str, Any]]:
        """Change the vocabulary (``POST /vocabulary``): validate, encode in this stage's
        thread, hand over to the worker.

        Args:
            value: The body's ``vocabulary``: a list of words; ``[]`` = back to the
                configured vocabulary (else the bundle's), forgetting the saved one.
            wait_s: Longest wait for the encoding (bounded by :data:`ENCODE_WAIT_S`).

        Returns:
            ``(200, facts)`` once encoded, ``(202, facts)`` while still encoding.

        Raises:
            HttpError: 400 naming ``vocabulary``; 409 on a bundle without a vocabulary or
                without a text tower for new words; 503 while another change is encoded; 500
                when encoding fails otherwise (logged).
        """
        if self.kind != "yoloe":
            why = FASTSAM_WHY if self.kind == "fastsam" else "the loaded segmenter has none"
            raise HttpError(409, f"vocabulary: {why}", "vocabulary")
        try:
            words = tuple(vocabulary("vocabulary", value))
        except ConfigError as exc:
            raise HttpError(400, str(exc), "vocabulary") from None
        source = "runtime"
        if not words:
            source = "config" if self.configured else "bundle"
            words = self.configured or (self._default[0] if self._default else ())
            if not words:
                raise HttpError(
                    400,
                    "vocabulary: [] means the configured vocabulary, and there is none "
                    "(neither processing.vocabulary nor the bundle's); give words",
                    "vocabulary",
                )
        if not self._busy.acquire(blocking=False):
            raise HttpError(
                503,
                "busy: another vocabulary change is being encoded; retry later",
                None,
                {"Retry-After": "1"},
            )
        try:
            future = self._executor().submit(self._change, words, source)
        except RuntimeError:  # shut down
            self._busy.release()
            raise HttpError(503, "stopping: the service is shutting down") from None
        try:
            future.result(timeout=min(wait_s, ENCODE_WAIT_S))
        except FutureTimeout:
            return 202, {**self.facts(), "status": "encoding"}
        except (BundleError, InputError) as exc:
            raise HttpError(409, f"vocabulary: {exc}", "vocabulary") from None
        except Exception as exc:
            raise HttpError(500, f"vocabulary: encoding failed: {exc!r}", "vocabulary") from None
        return 200, {**self.facts(), "status": "accepted"}

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="vocabulary")
        return self._pool

    def _change(self, words: tuple[str, ...], source: str) -> None:
        """Encode and hand over (this stage's thread); releases the busy lock."""
        try:
            t0 = time.perf_counter()
            try:
                resolved = self._resolve(words)
            except Exception as exc:
                self._failed(f"cannot set {list(words)}: {exc}")
                if not isinstance(exc, FastSAMEdgeError):
                    _LOGGER.exception("vocabulary: encoding failed")
                raise
            with self._lock:
                self._pending = resolved
                self.words, self.source, self.last_error = words, source, ""
            if source == "runtime":
                self.state.save({"vocabulary": list(words), "configured": list(self.configured)})
            else:
                self.state.remove()
            _LOGGER.info(
                "vocabulary: %s (%s; encoded in %.0f ms), from the next frame",
                ", ".join(words),
                _SOURCES[source],
                (time.perf_counter() - t0) * 1e3,
            )
            if self.on_change is not None:
                try:
                    self.on_change(words)
                except Exception:
                    _LOGGER.exception("vocabulary: announcing the change failed")
        finally:
            self._busy.release()

    def apply(self, segmenter: object) -> None:
        """Swap an accepted vocabulary in (the worker, between two frames); a no-op otherwise.
        A failure is logged and counted; the frame goes on with the previous vocabulary."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None or not isinstance(segmenter, HasVocabulary):
            return
        names, raw = pending
        try:
            segmenter.set_vocabulary(list(names), raw)
        except Exception as exc:
            self._failed(f"cannot apply {list(names)}: {exc!r}")
            return
        self.active = names
        self.metrics.inc("fastsam_vocabulary_changes_total")

    def facts(self) -> dict[str, Any]:
        """``GET /vocabulary`` and the status: kind, family, the vocabulary and its state."""
        if self.kind != "yoloe":
            return {
                "kind": self.kind,
                "vocabulary": [],
                "why": FASTSAM_WHY if self.kind == "fastsam" else "no bundle vocabulary",
            }
        with self._lock:
            words, active = self.words, self.active
        return {
            "kind": self.kind,
            "family": self.family,
            "vocabulary": list(words),
            "active": list(active),
            "pending": words != active,
            "encoding": self._busy.locked(),
            "source": self.source,
            "configured": list(self.configured),
            "default": list(self._default[0]) if self._default else [],
            "error": self.last_error,
            "max_words": MAX_VOCABULARY_WORDS,
            "max_chars": MAX_WORD_CHARS,
        }

    def close(self) -> None:
        """Stop the encoding thread (an encoding under way finishes, unused)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


_SOURCES = {
    "runtime": "set at runtime",
    "config": "processing.vocabulary",
    "bundle": "the bundle's",
}


# ------------------------------------------------------------------------------------------
# endpoints
# ------------------------------------------------------------------------------------------


def _stage(h: Any) -> VocabularyStage:
    stage = getattr(h.api, "vocabulary", None)
    if not isinstance(stage, VocabularyStage):
        raise HttpError(409, "vocabulary: this service has no vocabulary stage", "vocabulary")
    return stage


def _get_vocabulary(h: Any, _body: bytes) -> None:
    h.send_json(200, _stage(h).facts())


def _post_vocabulary(h: Any, body: bytes) -> None:
    doc = load_json_object(body, ("vocabulary",))
    if "vocabulary" not in doc:
        raise HttpError(
            400,
            'vocabulary: missing; send {"vocabulary": ["person", "dog"]} ([] = the configured)',
            "vocabulary",
        )
    status, answer = _stage(h).request(doc["vocabulary"], h.request_timeout_s)
    h.send_json(status, answer)


def vocabulary_routes() -> dict[str, dict[str, Route]]:
    """``GET`` / ``POST /vocabulary``, to merge into the API's route table."""
    return {"/vocabulary": {"GET": Route(_get_vocabulary), "POST": Route(_post_vocabulary)}}


__all__ = ["VocabularyStage", "label_counts", "vocabulary_routes"]
