"""``edge.bench.vocab``: the open-vocabulary cost rows (report shape; the run itself is in
``tests/test_yoloe_export.py``, which has YOLOE bundles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.bench.vocab import NEW_WORDS, WORDS, run_vocab_bench, vocab_markdown
from edge.errors import InputError


def test_markdown_has_every_row_and_the_new_word() -> None:
    report = {
        "bundle": "y", "precision": "int8", "threads": 2, "image_hw": [480, 640], "runs": 5,
        "words": "text tower",
        "rows": [
            {"row": "k=1", "median_ms": 100.0, "masks": 3, "vs_k1": 1.0, "vs_fastsam": 1.1},
            {"row": "k=20", "median_ms": 104.0, "masks": 9, "vs_k1": 1.04, "vs_fastsam": 1.14},
            {"row": "fastsam", "median_ms": 91.0, "masks": 40, "vs_k1": 0.91, "vs_fastsam": 1.0},
        ],
        "new_word": {"first_ms": 80.0, "warm_ms": 12.5, "precision": "int8"},
    }  # fmt: skip
    md = vocab_markdown(report)
    assert "| k=20 | 104.0 | 9 | 1.04x | 1.14x |" in md
    assert "12.5 ms with the session kept" in md
    report["new_word"] = None
    assert "New word" not in vocab_markdown(report)


def test_new_words_are_not_in_the_timed_vocabularies() -> None:
    assert not set(NEW_WORDS) & set(WORDS) and len(WORDS) >= 20


def test_refuses_a_fastsam_bundle(demo_bundle: Path) -> None:
    with pytest.raises(InputError, match="not a YOLOE bundle"):
        run_vocab_bench(str(demo_bundle), np.zeros((64, 64, 3), np.uint8), [1], runs=1)
