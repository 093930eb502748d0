"""The service's open vocabulary (``edge.service.vocabulary``): where it comes from at start,
``GET`` / ``POST /vocabulary`` (validation, auth, limits, FastSAM bundles), the hand-over to the
worker between frames, persistence across restarts and corrupt state files, the facts in
``/state`` and ``/healthz``. A tiny YOLOE segmenter (tests/fakes.py) stands in for a trained
bundle."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from contextlib import nullcontext as DoesNotRaise
from pathlib import Path

import numpy as np
import pytest
from fakes import (
    FakeSegmenter,
    FakeTextTower,
    start_service,
    stop_service,
    word_embedding,
    yoloe_segmenter,
)

from edge.service.clock import FakeClock
from edge.service.config import MAX_VOCABULARY_WORDS, ConfigError, demo_config
from edge.service.http import HttpError
from edge.service.runner import Service
from edge.service.state import StateFile
from edge.service.vocabulary import STATE_NAME, VocabularyStage, label_counts

WAIT = 60.0
TOKEN = "vocabulary-test-token-0123"
JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _stage(tmp_path: Path, configured: tuple[str, ...] = ()) -> VocabularyStage:
    return VocabularyStage(list(configured), tmp_path / "state")


def _save(tmp_path: Path, words: list[str], configured: list[str] | None = None) -> None:
    StateFile(tmp_path / "state" / STATE_NAME, "vocabulary").save(
        {"vocabulary": words, "configured": configured or []}
    )


# ------------------------------------------------------------------------------------------
# start: saved > configured > the bundle's
# ------------------------------------------------------------------------------------------


def test_start_takes_the_bundle_default_then_config_then_saved(tmp_path, demo_bundle):
    tower = FakeTextTower()
    seg = yoloe_segmenter(demo_bundle, tower=tower)
    stage = _stage(tmp_path)
    stage.start(seg)
    assert stage.words == seg.vocabulary == ("dog", "cat") and stage.source == "bundle"
    assert tower.calls == []  # the bundle's own embeddings: no text tower call

    seg = yoloe_segmenter(demo_bundle, tower=tower)
    stage = _stage(tmp_path, ("person", "bike"))
    stage.start(seg)
    assert seg.vocabulary == ("person", "bike") and stage.source == "config"
    assert tower.calls == [["person", "bike"]]

    _save(tmp_path, ["red car"], ["person", "bike"])  # set at runtime over this config
    seg = yoloe_segmenter(demo_bundle, tower=tower)
    stage = _stage(tmp_path, ("person", "bike"))
    stage.start(seg)
    assert seg.vocabulary == ("red car",) and stage.source == "runtime"
    facts = stage.facts()
    assert facts["kind"] == "yoloe" and facts["family"] == "11"
    assert facts["vocabulary"] == ["red car"] and facts["default"] == ["dog", "cat"]


def test_an_edited_config_wins_over_the_saved_vocabulary(tmp_path, demo_bundle, caplog):
    _save(tmp_path, ["red car"], ["person"])  # saved against another configuration
    seg = yoloe_segmenter(demo_bundle, tower=FakeTextTower())
    stage = _stage(tmp_path, ("person", "bike"))
    with caplog.at_level(logging.INFO, logger="edge.service"):
        stage.start(seg)
    assert seg.vocabulary == ("person", "bike") and stage.source == "config"
    assert "processing.vocabulary was changed" in caplog.text
    assert not (tmp_path / "state" / STATE_NAME).exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"version": 7, "vocabulary": ["x"], "configured": []}', "version 7"),
        (b'{"version": 1, "vocabulary": "dog", "configured": []}', "expected a list"),
        (b'{"version": 1, "vocabulary": ["dog", "DOG"], "configured": []}', "repeats"),
        (b'{"version": 1, "vocabulary": ["a\\u0000b"], "configured": []}', "control"),
        (b'{"version": 1, "vocab', "not JSON"),  # a partial write (not ours: ours are atomic)
    ],
)
def test_a_corrupt_state_file_is_logged_and_ignored(tmp_path, demo_bundle, caplog, content, why):
    path = tmp_path / "state" / STATE_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    seg = yoloe_segmenter(demo_bundle, tower=FakeTextTower())
    stage = _stage(tmp_path)
    with caplog.at_level(logging.WARNING, logger="edge.service"):
        stage.start(seg)
    assert seg.vocabulary == ("dog", "cat") and stage.source == "bundle"
    assert why in caplog.text and "ignoring" in caplog.text


def test_saved_words_that_cannot_be_encoded_fall_back(tmp_path, demo_bundle, caplog):
    _save(tmp_path, ["zebra"])
    seg = yoloe_segmenter(demo_bundle, tower=None)  # no text tower: new words cannot be encoded
    stage = _stage(tmp_path)
    with caplog.at_level(logging.ERROR, logger="edge.service"):
        stage.start(seg)
    assert seg.vocabulary == ("dog", "cat") and "no text tower" in stage.last_error
    assert stage.metrics.get("fastsam_errors_total", kind="vocabulary") == 1


@pytest.mark.parametrize(
    ("default", "configured", "tower", "expectation", "needle"),
    [
        (("dog",), (), None, DoesNotRaise(), None),
        ((), (), FakeTextTower(), pytest.raises(ConfigError), "has no default vocabulary"),
        (("dog",), ("zebra",), None, pytest.raises(ConfigError), "no text tower"),
        (("dog",), ("dog",), None, DoesNotRaise(), None),  # the bundle's words: no tower needed
    ],
)
def test_start_errors_name_the_config_key(
    tmp_path, demo_bundle, default, configured, tower, expectation, needle
):
    seg = yoloe_segmenter(demo_bundle, default=default, tower=tower)
    with expectation as exc:
        _stage(tmp_path, configured).start(seg)
    if needle:
        assert str(exc.value).startswith("processing.vocabulary: ") and needle in str(exc.value)


def test_fastsam_bundle_refuses_a_configured_vocabulary(tmp_path, demo_bundle):
    from edge.segmenter import Segmenter

    seg = Segmenter.load(demo_bundle, threads=1)
    with pytest.raises(ConfigError, match=r"processing.vocabulary: the bundle .* FastSAM"):
        _stage(tmp_path, ("dog",)).start(seg)
    stage = _stage(tmp_path)
    stage.start(seg)  # no vocabulary: fine
    assert stage.facts() == {"kind": "fastsam", "vocabulary": [], "why": stage.facts()["why"]}
    with pytest.raises(HttpError) as err:
        stage.request(["dog"])
    assert err.value.status == 409 and "FastSAM" in err.value.message


# ------------------------------------------------------------------------------------------
# changes and the hand-over to the worker
# ------------------------------------------------------------------------------------------


def test_a_change_encodes_new_words_once_and_applies_between_frames(tmp_path, demo_bundle):
    tower = FakeTextTower()
    seg = yoloe_segmenter(demo_bundle, tower=tower)
    stage = _stage(tmp_path)
    stage.start(seg)
    img = np.full((120, 160, 3), 100, np.uint8)
    status, facts = stage.request(["person", " dog "])
    assert status == 200 and facts["status"] == "accepted"
    assert facts["vocabulary"] == ["person", "dog"] and facts["pending"]
    assert tower.calls == [["person", "dog"]]  # one text-tower call for the new words
    # accepted, not yet swapped in: the segmenter keeps its vocabulary until the worker's turn
    assert seg.vocabulary == ("dog", "cat") and seg.segment(img).names == ("dog", "cat")
    stage.apply(seg)
    assert seg.vocabulary == ("person", "dog") and seg.segment(img).names == ("person", "dog")
    np.testing.assert_allclose(seg.vocabulary_embeddings[0], word_embedding("person"))
    assert stage.facts()["pending"] is False
    assert stage.metrics.get("fastsam_vocabulary_changes_total") == 1
    saved = json.loads((tmp_path / "state" / STATE_NAME).read_text())
    assert saved == {"version": 1, "vocabulary": ["person", "dog"], "configured": []}

    stage.request(["dog", "person"])  # both cached now: no tower call
    assert len(tower.calls) == 1
    stage.request([])  # back to the bundle's: its own embeddings, and the saved one forgotten
    stage.apply(seg)
    assert seg.vocabulary == ("dog", "cat") and stage.source == "bundle" and len(tower.calls) == 1
    assert not (tmp_path / "state" / STATE_NAME).exists()


def test_a_frame_never_sees_half_a_vocabulary(tmp_path, demo_bundle):
    """Many changes while a worker segments: every frame's names are one whole vocabulary."""
    seg = yoloe_segmenter(demo_bundle, tower=FakeTextTower())
    stage = _stage(tmp_path)
    stage.start(seg)
    vocabularies = [tuple(f"w{k}-{i}" for i in range(k % 4 + 1)) for k in range(20)]
    img = np.full((64, 64, 3), 100, np.uint8)
    seen: list[tuple[str, ...]] = []
    done = threading.Event()

    def worker() -> None:
        while not done.is_set():
            stage.apply(seg)
            seen.append(seg.segment(img).names)

    t = threading.Thread(target=worker)
    t.start()
    for words in vocabularies:
        assert stage.request(list(words))[0] == 200
    done.set()
    t.join(WAIT)
    allowed = {("dog", "cat"), *vocabularies}
    assert seen and all(names in allowed for names in seen)
    stage.apply(seg)
    assert seg.vocabulary == vocabularies[-1]


def test_slow_encoding_answers_202_and_applies_later(tmp_path, demo_bundle):
    tower = FakeTextTower()
    seg = yoloe_segmenter(demo_bundle, tower=tower)
    stage = _stage(tmp_path)
    stage.start(seg)
    tower.gate.clear()
    status, facts = stage.request(["zebra"], wait_s=0.05)
    assert status == 202 and facts["status"] == "encoding" and facts["encoding"]
    with pytest.raises(HttpError) as err:  # one change at a time
        stage.request(["horse"])
    assert err.value.status == 503 and err.value.headers == {"Retry-After": "1"}
    tower.gate.set()
    stage._pool.submit(lambda: None).result(WAIT)  # the encoding thread is done
    stage.apply(seg)
    assert seg.vocabulary == ("zebra",)
    stage.close()


@pytest.mark.parametrize(
    ("fail", "status", "needle"),
    [
        (RuntimeError("onnxruntime exploded"), 500, "encoding failed"),
        (None, 409, "no text tower"),  # a bundle without a text tower, new words
    ],
)
def test_encoding_errors_are_answered_and_logged(
    tmp_path, demo_bundle, caplog, fail, status, needle
):
    tower = FakeTextTower() if fail is not None else None
    if tower is not None:
        tower.fail = fail
    seg = yoloe_segmenter(demo_bundle, tower=tower)
    stage = _stage(tmp_path)
    stage.start(seg)
    with caplog.at_level(logging.ERROR, logger="edge.service"), pytest.raises(HttpError) as err:
        stage.request(["zebra"])
    assert err.value.status == status and needle in err.value.message
    assert err.value.field == "vocabulary" and "cannot set ['zebra']" in caplog.text
    stage.apply(seg)
    assert seg.vocabulary == ("dog", "cat") and stage.facts()["error"]
    assert stage.request([])[0] == 200  # and it goes on (the bundle's words need no tower)
    if tower is not None:
        tower.fail = None
        assert stage.request(["zebra"])[0] == 200 and stage.facts()["error"] == ""


def test_label_counts():
    doc = {"vocabulary": ["dog", "cat"], "masks": [{"label": "dog"}, {"label": "dog"}]}
    assert label_counts(doc) == {"dog": 2, "cat": 0}
    assert label_counts({"vocabulary": [], "masks": [{"label": None}]}) is None


# ------------------------------------------------------------------------------------------
# the service: HTTP, worker, restarts
# ------------------------------------------------------------------------------------------


def _start(out: Path, seg, **changes) -> Service:
    cfg = demo_config(
        out,
        **{
            "source.width": 160,
            "source.height": 120,
            "source.count": 3,
            "source.loop": True,
            "source.realtime": True,
            "trigger.interval.enabled": False,
            "http.enabled": True,
            "http.port": 0,
            "http.token": TOKEN,
            "http.max_body_bytes": 4096,
            "model.warmup": False,
            "model.conf": 0.5,
            **changes,
        },
    )
    return start_service(Service(cfg, segmenter=seg, clock=FakeClock()))


_stop = stop_service


def _request(svc, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", svc.http.port, timeout=WAIT)
    headers = {**(JSON if method == "POST" else {}), **AUTH, **(headers or {})}
    try:
        if body is not None and not isinstance(body, bytes):
            body = (body if isinstance(body, str) else json.dumps(body)).encode()
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read().decode()
        data = json.loads(raw) if raw else None
        return resp.status, data
    finally:
        conn.close()


@pytest.fixture(scope="module")
def tower():
    return FakeTextTower()


@pytest.fixture(scope="module")
def live(tmp_path_factory, demo_bundle, tower):
    svc = _start(
        tmp_path_factory.mktemp("vocab") / "out", yoloe_segmenter(demo_bundle, tower=tower)
    )
    yield svc
    _stop(svc)


@pytest.mark.parametrize(
    ("body", "headers", "status", "field", "needle"),
    [
        ({"vocabulary": ["person"]}, {"Authorization": "Bearer wrong-token-xxxxxxxx"}, 401,
         "authorization", "bearer token"),
        ("{not json", {}, 400, "body", "invalid JSON"),
        ([1, 2], {}, 400, "body", "expected a JSON object"),
        ({}, {}, 400, "vocabulary", "missing"),
        ({"vocabulary": ["a"], "words": 1}, {}, 400, "words", "unknown field"),
        ({"vocabulary": "person"}, {}, 400, "vocabulary", "expected a list"),
        ({"vocabulary": ["person", ""]}, {}, 400, "vocabulary", "vocabulary[1]"),
        ({"vocabulary": [f"w{i}" for i in range(MAX_VOCABULARY_WORDS + 1)]}, {}, 400,
         "vocabulary", f"{MAX_VOCABULARY_WORDS + 1} words, at most {MAX_VOCABULARY_WORDS}"),
        ({"vocabulary": ["Dog", "dog"]}, {}, 400, "vocabulary", "repeats"),
        ({"vocabulary": ["x" * 5000]}, {}, 413, "body", "http.max_body_bytes"),
        ({"vocabulary": ["a"]}, {"Content-Type": "text/plain"}, 415, "Content-Type", "expected"),
    ],
)  # fmt: skip
def test_post_vocabulary_refusals_name_the_field(live, body, headers, status, field, needle):
    before = live.vocabulary.words
    code, doc = _request(live, "POST", "/vocabulary", body, headers)
    assert code == status and doc["field"] == field and needle in doc["error"], doc
    assert live.vocabulary.words == before
    assert _request(live, "GET", "/healthz")[0] == 200  # still alive


def test_get_needs_the_token_and_post_applies_on_the_next_frame(live, tower):
    code, _ = _request(live, "GET", "/vocabulary", headers={"Authorization": ""})
    assert code == 401
    code, facts = _request(live, "GET", "/vocabulary")
    assert code == 200 and facts["vocabulary"] == ["dog", "cat"] and facts["kind"] == "yoloe"
    code, doc = _request(live, "POST", "/trigger")
    assert code == 200 and doc["vocabulary"] == ["dog", "cat"]
    assert [m["label"] for m in doc["masks"]] == ["dog"]
    calls = len(tower.calls)
    code, facts = _request(live, "POST", "/vocabulary", {"vocabulary": ["cat", "bird"]})
    assert code == 200 and facts["vocabulary"] == ["cat", "bird"], facts
    # one text-tower call for both words (the bundle's exported embeddings of "cat" are not
    # the tower's, so it is encoded too)
    assert tower.calls[calls:] == [["cat", "bird"]]
    code, doc = _request(live, "POST", "/trigger")
    assert code == 200 and doc["vocabulary"] == ["cat", "bird"]
    assert all(m["label"] in ("cat", "bird") for m in doc["masks"])
    _, state = _request(live, "GET", "/state")
    assert (
        state["vocabulary"]["vocabulary"] == ["cat", "bird"] and not state["vocabulary"]["pending"]
    )
    assert sum(state["vocabulary"]["counts"].values()) == doc["num_masks"]
    _, health = _request(live, "GET", "/healthz", headers={"Authorization": ""})
    assert health["model"] == {"kind": "yoloe", "family": "11", "vocabulary": ["cat", "bird"]}
    assert "counts" not in health["model"]  # no token there: no scene data
    assert 'fastsam_http_requests_total{code="200",path="/vocabulary"}' in live.metrics.render()


def test_the_vocabulary_survives_a_restart(tmp_path, demo_bundle):
    out = tmp_path / "out"
    first = _start(out, yoloe_segmenter(demo_bundle, tower=FakeTextTower()))
    try:
        assert _request(first, "POST", "/vocabulary", {"vocabulary": ["zebra", "horse"]})[0] == 200
    finally:
        _stop(first)
    assert json.loads((out / ".state" / STATE_NAME).read_text())["vocabulary"] == [
        "zebra",
        "horse",
    ]
    tower = FakeTextTower()
    second = _start(out, yoloe_segmenter(demo_bundle, tower=tower))
    try:
        _, facts = _request(second, "GET", "/vocabulary")
        assert facts["vocabulary"] == ["zebra", "horse"] and facts["source"] == "runtime"
        code, doc = _request(second, "POST", "/trigger")
        assert code == 200 and doc["vocabulary"] == ["zebra", "horse"]
    finally:
        _stop(second)


def test_fastsam_bundle_answers_409_and_a_configured_vocabulary_stops_the_start(
    tmp_path, demo_bundle
):
    from edge.segmenter import Segmenter

    seg = Segmenter.load(demo_bundle, threads=1)
    svc = _start(tmp_path / "out", seg)
    try:
        code, doc = _request(svc, "POST", "/vocabulary", {"vocabulary": ["dog"]})
        assert code == 409 and doc["field"] == "vocabulary" and "FastSAM" in doc["error"]
        code, facts = _request(svc, "GET", "/vocabulary")
        assert code == 200 and facts["kind"] == "fastsam" and facts["vocabulary"] == []
    finally:
        _stop(svc)
    cfg = demo_config(
        tmp_path / "out2", **{"processing.vocabulary": ["dog"], "http.enabled": False}
    )
    with pytest.raises(ConfigError, match="processing.vocabulary: .*FastSAM"):
        Service(cfg, segmenter=seg).start()


def test_a_segmenter_without_a_bundle_has_no_vocabulary(tmp_path):
    svc = _start(tmp_path / "out", FakeSegmenter())
    try:
        code, doc = _request(svc, "POST", "/vocabulary", {"vocabulary": ["dog"]})
        assert code == 409 and doc["field"] == "vocabulary"
        assert _request(svc, "GET", "/healthz")[1]["model"] == {"kind": "", "vocabulary": []}
    finally:
        _stop(svc)
