"""open_clip's ``SimpleTokenizer`` (the OpenAI CLIP BPE tokenizer), without torch.

A line-by-line port of ``open_clip.tokenizer.SimpleTokenizer`` (open-clip-torch 3.3.0, itself
copied from openai/CLIP, MIT licence) with the default ``clean='lower'``:

1. cleaning: ``ftfy.fix_text``, ``html.unescape`` twice, strip, whitespace collapse
   (``" ".join(text.split())``), ``lower()``;
2. pre-tokenising with the same ``regex`` pattern (special tokens, contractions, letter runs,
   single digits, other non-space runs; ``IGNORECASE``);
3. byte-level BPE with the same merge ranks, read from the bundle's copy of open_clip's
   ``bpe_simple_vocab_16e6.txt.gz``;
4. rows ``[sot] + ids + [eot]``, truncated to the context length with the last id forced to
   eot, zero-padded (pad id 0, as open_clip).

A row needs only its first ``context_length - 1`` ids, so a long text stops being encoded there
(the ids are the same: BPE works word by word). Words seen are cached in a
:class:`edge.lru.BoundedLRU` (:data:`BPE_CACHE_ENTRIES`, :data:`BPE_CACHE_BYTES`): a flood of new
words costs at most that, never the service's memory.

The export tests check the ids against ``open_clip.get_tokenizer`` on thousands of strings.

``ftfy`` and ``regex`` come with the ``text`` extra (``pip install "fastsam-edge[text]"``); they
are imported only when a tokenizer is created, so the rest of ``edge`` imports without them.
"""

from __future__ import annotations

import gzip
import html
import importlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.errors import BundleError, InputError
from edge.lru import BoundedLRU

CONTEXT_LENGTH = 77
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
# open_clip slices the merges file as merges[1 : 49152 - 256 - 2 + 1]: 48,894 merges, which with
# 2 * 256 byte symbols and the two special tokens gives a vocabulary of 49,408.
NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2
BPE_CACHE_ENTRIES = 10_000
"""Words whose BPE is cached (a camera's prompts use a few hundred)."""
BPE_CACHE_BYTES = 2 << 20
"""Memory bound of that cache (keys, values and their bookkeeping)."""
TEXT_EXTRA_HINT = 'install the text extra: pip install "fastsam-edge[text]"'
_PATTERN = r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def missing_text_deps() -> list[str]:
    """Names of the ``text`` extra's packages (``ftfy``, ``regex``) that cannot be imported."""
    return [n for n in ("ftfy", "regex") if importlib.util.find_spec(n) is None]


def _import_text_deps() -> tuple[ModuleType, ModuleType]:
    """Import ``ftfy`` and ``regex`` or raise :class:`BundleError` naming the missing ones."""
    missing = missing_text_deps()
    if missing:
        raise BundleError(
            f"text prompts need the package(s) {', '.join(map(repr, missing))}, which are not "
            f"installed; {TEXT_EXTRA_HINT}"
        )
    try:
        return importlib.import_module("ftfy"), importlib.import_module("regex")
    except ImportError as exc:  # installed but broken
        raise BundleError(f"text prompts: cannot import {exc.name!r}: {exc}") from exc


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode character table (256 entries)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


def read_merges(path: str | Path) -> list[tuple[str, str]]:
    """Read the BPE merges of open_clip's ``bpe_simple_vocab_16e6.txt.gz``.

    Raises:
        BundleError: Missing, unreadable or truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(
            f"tokenizer: BPE merges file {str(path)!r} is missing; re-export the bundle with "
            "fastsam-export ... --clip MODEL (it copies open_clip's bpe_simple_vocab_16e6.txt.gz)"
        )
    try:
        lines = gzip.open(path).read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BundleError(f"tokenizer: cannot read BPE merges file {str(path)!r}: {exc}") from exc
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise BundleError(
            f"tokenizer: {str(path)!r} is not open_clip's bpe_simple_vocab_16e6.txt.gz "
            f"(expected {NUM_MERGES} merge lines)"
        )
    return merges  # type: ignore[return-value]


@dataclass
class ClipTokenizer:
    """CLIP BPE tokenizer with open_clip's exact ids.

    Build with :meth:`from_file` or :meth:`from_manifest`; call with a list of strings.

    Attributes:
        context_length: Row length (77 for every OpenAI-style CLIP).
        sot_id: Start-of-text id (49406).
        eot_id: End-of-text id (49407).
        pad_id: Padding id (0, as open_clip; it matters for bidirectional text towers).
    """

    encoder: dict[str, int]
    bpe_ranks: dict[tuple[str, str], int]
    context_length: int = CONTEXT_LENGTH
    sot_id: int = 0
    eot_id: int = 0
    pad_id: int = 0
    _ftfy: Any = None
    _pat: Any = None
    _cache: BoundedLRU[str, str] | None = None

    @classmethod
    def from_file(
        cls, bpe_path: str | Path, context_length: int = CONTEXT_LENGTH
    ) -> ClipTokenizer:
        """Build the tokenizer from a ``bpe_simple_vocab_16e6.txt.gz`` file.

        Raises:
            BundleError: ``ftfy``/``regex`` missing (names the ``text`` extra) or a bad file.
        """
        ftfy, regex = _import_text_deps()
        if not isinstance(context_length, int) or context_length < 2:
            raise BundleError(
                f"tokenizer: context_length must be an integer >= 2, got {context_length!r}"
            )
        merges = read_merges(bpe_path)
        byte_chars = list(bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars]
        vocab.extend("".join(m) for m in merges)
        special = [SOT_TOKEN, EOT_TOKEN]
        vocab.extend(special)
        encoder = {tok: i for i, tok in enumerate(vocab)}
        pat = regex.compile("|".join(special) + _PATTERN, regex.IGNORECASE)
        return cls(
            encoder=encoder,
            bpe_ranks={m: i for i, m in enumerate(merges)},
            context_length=context_length,
            sot_id=encoder[SOT_TOKEN],
            eot_id=encoder[EOT_TOKEN],
            pad_id=0,
            _ftfy=ftfy,
            _pat=pat,
            _cache=BoundedLRU(BPE_CACHE_ENTRIES, BPE_CACHE_BYTES),
        )

    @classmethod
    def from_manifest(cls, bundle_dir: str | Path, section: dict[str, Any]) -> ClipTokenizer:
        """Build from the ``clip.tokenizer`` manifest section of a bundle.

        The caller checks the file's hash (``edge.bundle.verify_file``); this checks that the
        section is one this port implements and that its special ids agree with the file.

        Raises:
            BundleError: Missing or unsupported section, missing file or missing text extra.
        """
        if not isinstance(section, dict) or "bpe" not in section:
            raise BundleError(
                "bundle.json: clip.tokenizer section is missing or has no 'bpe' file; re-export "
                "the bundle with fastsam-export ... --clip MODEL"
            )
        kind = section.get("type", "open_clip.SimpleTokenizer")
        if kind != "open_clip.SimpleTokenizer":
            raise BundleError(
                f"bundle.json: clip.tokenizer.type {kind!r} is not supported by this runtime "
                "(only 'open_clip.SimpleTokenizer')"
            )
        if section.get("clean", "lower") != "lower":
            raise BundleError(
                f"bundle.json: clip.tokenizer.clean {section.get('clean')!r} is not supported "
                "(only 'lower')"
            )
        tok = cls.from_file(
            Path(bundle_dir) / str(section["bpe"]),
            context_length=int(section.get("context_length", CONTEXT_LENGTH)),
        )
        for key, have in (("sot_id", tok.sot_id), ("eot_id", tok.eot_id), ("pad_id", tok.pad_id)):
            want = section.get(key, have)
            if int(want) != have:
                raise BundleError(
                    f"bundle.json: clip.tokenizer.{key} is {want}, but the BPE file gives {have}"
                )
        return tok

    @property
    def vocab_size(self) -> int:
        """Number of ids (49408)."""
        return len(self.encoder)

    def clean(self, text: str) -> str:
        """open_clip's ``_clean_lower``: ftfy, html-unescape twice, whitespace collapse, lower."""
        text = self._ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        text = " ".join(text.split()).strip()
        return text.lower()

    def bpe(self, token: str) -> str:
        """Byte-level BPE of one pre-token (already mapped through ``bytes_to_unicode``)."""
        if token in (SOT_TOKEN, EOT_TOKEN):
            return token
        cache = self._cache
        if cache is not None:
            hit = cache.get(token)
            if hit is not None:
                return hit
        word: tuple[str, ...] = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _get_pairs(word)
        if not pairs:
            return token + "</w>"
        ranks = self.bpe_ranks
        inf = float("inf")
        while True:
            bigram = min(pairs, key=lambda pair: ranks.get(pair, inf))
            if bigram not in ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _get_pairs(word)
        out = " ".join(word)
        if cache is not None:
            cache.put(token, out)
        return out

    @property
    def cache_stats(self) -> dict[str, int]:
        """The BPE cache's entries, bytes, bounds and evictions (:meth:`BoundedLRU.stats`)."""
        return self._cache.stats() if self._cache is not None else {"entries": 0, "bytes": 0}

    def encode(self, text: str, max_ids: int | None = None) -> list[int]:
        """Ids of one string, without sot/eot.

        Args:
            text: The string.
            max_ids: Stop after this many ids (the rest of a long text is never encoded);
                ``None``: all of them.
        """
        byte_encoder = bytes_to_unicode()
        ids: list[int] = []
        for m in self._pat.finditer(self.clean(text)):
            mapped = "".join(byte_encoder[b] for b in m.group().encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped).split(" "))
            if max_ids is not None and len(ids) >= max_ids:
                return ids[:max_ids]
        return ids

    def __call__(
        self, texts: str | list[str], context_length: int | None = None
    ) -> NDArray[np.int64]:
        """Token rows, exactly as ``open_clip`` tokenizers return them.

        Args:
            texts: One string or a list of strings.
            context_length: Row length (default: the bundle's, 77).

        Returns:
            (N, context_length) int64: ``[sot] + ids + [eot]``, truncated with the last id forced
            to eot, zero-padded.

        Raises:
            InputError: A text is not a string, or a bad context length.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            raise InputError(
                f"texts: expected a string or a list of strings, got {type(texts).__name__}"
            )
        n_ctx = context_length or self.context_length
        if not isinstance(n_ctx, int) or n_ctx < 2:
            raise InputError(f"context_length: expected an integer >= 2, got {n_ctx!r}")
        out = np.full((len(texts), n_ctx), self.pad_id, dtype=np.int64)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"texts[{i}]: expected a string, got {type(text).__name__}")
            # n_ctx - 1 ids tell whether the row is truncated, and give all it keeps
            ids = [self.sot_id, *self.encode(text, max_ids=n_ctx - 1), self.eot_id]
            if len(ids) > n_ctx:
                ids = ids[:n_ctx]
                ids[-1] = self.eot_id
            out[i, : len(ids)] = ids
        return out
