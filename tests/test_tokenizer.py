"""edge/tokenizer.py: exact parity with open_clip's tokenizer (needs ftfy, regex, open_clip).

Everything here needs the ``text`` extra (ftfy, regex) or open_clip, so the module is
export-marked; the runtime-only checks (missing text extra, missing BPE file) live in
``tests/test_clip.py`` and need nothing beyond numpy.
"""

from __future__ import annotations

import gzip
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.errors import BundleError, InputError
from edge.tokenizer import CONTEXT_LENGTH, VOCAB_SIZE, ClipTokenizer

pytestmark = pytest.mark.export

MODEL = "ViT-B-32-quickgelu"

HAND_PICKED = [
    "a photo of a dog",
    "A Photo Of A DOG",
    "dog’s ball &amp; frisbee",
    "“quoted” ‘single’ „low“ «guillemets»",
    "ﬁsh and ﬂower oﬃce ﬀ",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ １２３",
    "&amp;lt;b&amp;gt;bold&amp;lt;/b&amp;gt;",
    "&lt;tag&gt; &quot;x&quot; &#39;y&#39; &#x41; &#7876 &lt",
    "&amp;amp;amp;",
    "😀🐶🚗 emoji 👩‍👩‍👧 flags 🇫🇷 skin 👍🏽",
    "café naïve résumé Ångström façade Œuvre straße",
    "cafe\u0301 combining e\u0301",
    "cafÃ© mojibake â€™ Ã¼ber",
    "100 people 1990s COVID-19 3.14159 1,000,000 ²³ ½ Ⅻ",
    "",
    " ",
    "\t\n  \r\n\u00a0\u3000 ",
    "MiXeD CaSe WoRdS",
    "!!! ??? ... --- *** ### !!!??? ...!!!",
    "it's they're we've I'm you'll he'd don't IT'S THEY'RE",
    "<start_of_text> <end_of_text> <START_OF_TEXT>",
    "<|startoftext|> <|endoftext|>",
    "word " * 100,
    "x" * 500,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "中文 日本語 한국어 Русский Ελληνικά עברית العربية हिन्दी ไทย",
    "tab\tseparated\tvalues and new\nlines",
    "a\u200bzero\u200bwidth\u200bspace and soft\u00adhyphen",
    "C++ C# F# .NET node.js e-mail @user #hashtag $100 50% a/b a\\b",
    "the the the the the",
    "ǅ ǈ ǋ ǲ titlecase digraphs İstanbul ıi",
    "\x00\x01\x1f control \x7f chars",
]

_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "          \t\n.,;:!?'\"-_()[]{}<>/\\|@#$%^&*+=~`"
    "’‘“”«»…–—•·©®™°±×÷"
    "ﬁﬂﬀﬃﬄ"
    "ＡＢＣａｂｃ０１２！？　"
    "éèêëàâäîïôöùûüçñÅåØøßÆæŒœ"
    "\u0301\u0308\u200b\u00a0\u00ad"
    "αβγΔΩбвгДЖ中文字日本語한국어"
    "😀🐶🚗👍🏽🇫🇷\u200d"
    "²³½Ⅻ٣"
)
_FRAGMENTS = [
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&#39;",
    "&#x41;",
    "&amp;lt;",
    "&nbsp;",
    "&eacute;",
    "<start_of_text>",
    "<end_of_text>",
    "'s",
    "'T",
    "'re",
    "'ve",
    "'M",
    "'ll",
    "'d",
    "1990s",
    "COVID-19",
    "100",
    "3.14",
    "cafÃ©",
    "â€™",
    "http://x.io/a?b=c",
    "...",
    "!!!",
]


def generated_strings(n: int, seed: int = 0) -> list[str]:
    """Random strings mixing the alphabet, entity/contraction fragments and long runs."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.25:
                parts.append(rng.choice(_FRAGMENTS))
            elif r < 0.35:
                parts.append(rng.choice(HAND_PICKED)[: rng.randint(0, 40)])
            else:
                parts.append("".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 12))))
        s = (" " if rng.random() < 0.6 else "").join(parts)
        if i % 50 == 0:
            s = s * rng.randint(5, 20)  # long: far beyond 77 tokens
        out.append(s)
    return out


@pytest.fixture(scope="module")
def bpe_path() -> Path:
    from open_clip.tokenizer import default_bpe

    return Path(default_bpe())


@pytest.fixture(scope="module")
def tok(bpe_path: Path) -> ClipTokenizer:
    return ClipTokenizer.from_file(bpe_path)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return HAND_PICKED + generated_strings(3000)


# MobileCLIP and MobileCLIP2 use open_clip's SimpleTokenizer with the same BPE and 77 tokens
# (export/clip.py refuses any other tokenizer); the golden set proves the ids, per model.
@pytest.mark.parametrize(
    "model", [MODEL, "MobileCLIP-S1", "MobileCLIP-S2", "MobileCLIP-B", "MobileCLIP2-S0"]
)
def test_golden_against_open_clip_get_tokenizer(
    tok: ClipTokenizer, corpus: list[str], model: str
) -> None:
    import open_clip

    ref = open_clip.get_tokenizer(model)
    want = ref(corpus).numpy()
    got = tok(corpus)
    assert got.dtype == np.int64 and got.shape == want.shape == (len(corpus), CONTEXT_LENGTH)
    bad = [corpus[i] for i in np.flatnonzero((got != want).any(axis=1))]
    assert not bad, f"{len(bad)} of {len(corpus)} strings differ, e.g. {bad[:3]!r}"
    truncated = int((want[:, -1] == tok.eot_id).sum())
    assert truncated >= 50, "the corpus must exercise truncation"


def test_golden_against_simple_tokenizer_default(tok: ClipTokenizer, corpus: list[str]) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    ref = SimpleTokenizer()
    sample = corpus[::3]
    assert np.array_equal(tok(sample), ref(sample).numpy())
    for text in HAND_PICKED:
        assert tok.encode(text) == ref.encode(text), text
    assert tok.encoder == ref.encoder
    assert tok.bpe_ranks == ref.bpe_ranks


def test_known_ids_and_specials(tok: ClipTokenizer) -> None:
    row = tok(["a photo of a dog"])[0]
    assert row[:7].tolist() == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert not row[7:].any()
    assert (tok.sot_id, tok.eot_id, tok.pad_id, tok.vocab_size) == (49406, 49407, 0, VOCAB_SIZE)
    assert tok.clean("dog’s ball &amp; frisbee") == "dog's ball & frisbee"
    assert tok.clean("Ｆｕｌｌwidth ﬁsh") == "fullwidth fish"
    assert tok([""])[0, :3].tolist() == [49406, 49407, 0]


def test_truncation_keeps_eot(tok: ClipTokenizer) -> None:
    row = tok(["dog " * 200])[0]
    assert row[0] == tok.sot_id and row[-1] == tok.eot_id and (row[1:-1] == 1929).all()
    short = tok(["dog " * 200], context_length=8)
    assert short.shape == (1, 8) and short[0, -1] == tok.eot_id


def test_string_and_bad_inputs(tok: ClipTokenizer) -> None:
    assert np.array_equal(tok("a dog"), tok(["a dog"]))
    assert tok([]).shape == (0, CONTEXT_LENGTH)
    with pytest.raises(InputError, match=r"texts\[1\]"):
        tok(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="texts"):
        tok(42)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="context_length"):
        tok(["a"], context_length=1)


def test_bpe_file_errors(tmp_path: Path, bpe_path: Path) -> None:
    with pytest.raises(BundleError, match="missing"):
        ClipTokenizer.from_file(tmp_path / "nope.txt.gz")
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(BundleError, match="cannot read"):
        ClipTokenizer.from_file(broken)
    short = tmp_path / "short.txt.gz"
    with gzip.open(short, "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\nt h\n")
    with pytest.raises(BundleError, match="expected 48894 merge lines"):
        ClipTokenizer.from_file(short)


def test_from_manifest_section(tmp_path: Path, bpe_path: Path) -> None:
    shutil.copyfile(bpe_path, tmp_path / "bpe.txt.gz")
    sec = {
        "type": "open_clip.SimpleTokenizer",
        "bpe": "bpe.txt.gz",
        "context_length": 77,
        "sot_id": 49406,
        "eot_id": 49407,
        "pad_id": 0,
        "clean": "lower",
    }
    tok = ClipTokenizer.from_manifest(tmp_path, sec)
    assert tok.context_length == 77
    for change, match in (
        ({"type": "HFTokenizer"}, "not supported"),
        ({"clean": "canonicalize"}, "not supported"),
        ({"eot_id": 1}, "eot_id"),
        ({"bpe": "missing.gz"}, "missing"),
    ):
        with pytest.raises(BundleError, match=match):
            ClipTokenizer.from_manifest(tmp_path, {**sec, **change})
    with pytest.raises(BundleError, match="clip.tokenizer"):
        ClipTokenizer.from_manifest(tmp_path, {"type": "open_clip.SimpleTokenizer"})
