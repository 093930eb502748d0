"""What the service needs from a segmenter, as typed protocols.

:class:`edge.segmenter.Segmenter` satisfies all of them. A segmenter passed to
:class:`~edge.service.runner.Service` by an embedding program (or a test fake) needs only
:class:`SegmentsFrames`; the service then skips what the others enable: the bundle facts in
``result.json`` and the warm-up size (:class:`HasBundle`), kept frames for ``POST /prompt``
(:class:`DetectsAndSelects`), the vocabulary of a YOLOE bundle (:class:`HasVocabulary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from edge.bundle import BundleManifest, YoloeSection
    from edge.postprocess import Detections
    from edge.prompts import Prompt
    from edge.types import Masks


class SegmentsFrames(Protocol):
    """The minimum: one BGR frame, everything mode or prompted."""

    def segment(
        self,
        image: NDArray[np.uint8],
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        prompt: Prompt | Sequence[Prompt] | None = None,
    ) -> Masks:
        """Masks of one frame (``edge.segmenter.Segmenter.segment``)."""
        ...


@runtime_checkable
class HasBundle(Protocol):
    """A segmenter loaded from a bundle: its manifest and the detector precision in use."""

    manifest: BundleManifest
    precision: str


@runtime_checkable
class DetectsAndSelects(Protocol):
    """Detect once, prompt many times (kept frames for ``POST /prompt``)."""

    def detect(
        self,
        image: NDArray[np.uint8],
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
    ) -> Detections:
        """Run the detector; masks are assembled on demand."""
        ...

    def select(
        self, detections: Detections, prompt: Prompt | Sequence[Prompt] | None = None
    ) -> Masks:
        """Apply prompts (or everything mode) to detections."""
        ...


@runtime_checkable
class HasVocabulary(Protocol):
    """A segmenter with an open vocabulary when loaded from a YOLOE bundle (``yoloe`` set;
    ``None``: FastSAM)."""

    yoloe: YoloeSection | None

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The words frames are segmented with."""
        ...

    @property
    def vocabulary_embeddings(self) -> NDArray[np.float32] | None:
        """Their (K, D) raw embeddings."""
        ...

    def set_vocabulary(
        self, names: Sequence[str], embeddings: NDArray[np.float32] | None = None
    ) -> None:
        """Set the words (``edge.segmenter.Segmenter.set_vocabulary``)."""
        ...

    def encode_words(self, words: Sequence[str]) -> NDArray[np.float32]:
        """Raw (K, D) embeddings of words (cached)."""
        ...


def bundle_of(segmenter: object) -> BundleManifest | None:
    """The segmenter's bundle manifest, or ``None`` for one not loaded from a bundle."""
    return segmenter.manifest if isinstance(segmenter, HasBundle) else None


__all__ = ["DetectsAndSelects", "HasBundle", "HasVocabulary", "SegmentsFrames", "bundle_of"]
