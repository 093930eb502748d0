"""The HTTP API: triggers with prompts, bad requests (4xx naming the field), the token, body
limits, busy (503), health and metrics, the Unix socket; the service stays alive throughout."""

from __future__ import annotations

import http.client
import importlib.util
import json
import socket
import sys
import threading
from pathlib import Path

import pytest

from edge.service.clock import FakeClock
from edge.service.config import demo_config
from edge.service.http import parse_trigger_body
from edge.service.runner import Service
from edge.service.testing import FakeSegmenter

WAIT = 60.0
HAS_PROMPTS = importlib.util.find_spec("edge.prompts") is not None


@pytest.fixture(scope="module")
def segmenter(demo_bundle):
    from edge.segmenter import Segmenter

    return Segmenter.load(demo_bundle, threads=1)


def _start(tmp_path: Path, seg, **changes) -> Service:
    cfg = demo_config(
        tmp_path / "out",
        **{
            "source.width": 160,
            "source.height": 120,
            "source.count": 3,
            "source.loop": True,
            "source.realtime": True,
            "trigger.interval.enabled": False,
            "http.enabled": True,
            "http.port": 0,
            "processing.max_masks": 20,
            "model.warmup": False,
            **changes,
        },
    )
    svc = Service(cfg, segmenter=seg, clock=FakeClock())
    svc._thread = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    svc._thread.start()
    assert svc.ready.wait(WAIT)
    return svc


def _stop(svc: Service) -> None:
    svc.request_stop("test")
    svc._thread.join(WAIT)
    assert not svc._thread.is_alive()


def _request(
    svc: Service,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict | None = None,
) -> tuple[int, dict | str, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", svc.http.port, timeout=WAIT)
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read().decode()
        ctype = resp.getheader("Content-Type", "")
        data = json.loads(raw) if ctype.startswith("application/json") else raw
        return resp.status, data, dict(resp.getheaders())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory, segmenter):
    """One service for the request/response cases (each case checks it is still alive)."""
    svc = _start(tmp_path_factory.mktemp("http"), segmenter)
    yield svc
    _stop(svc)


def test_trigger_returns_the_result_and_writes_it(live):
    status, doc, _ = _request(live, "POST", "/trigger")
    assert status == 200, doc
    assert doc["schema_version"] == 1 and doc["trigger"] == "http"
    assert doc["image"]["width"] == 160 and doc["num_masks"] == len(doc["masks"])
    result_dir = Path(doc["result_dir"])
    assert json.loads((result_dir / "result.json").read_text())["frame_id"] == doc["frame_id"]
    status, latest, _ = _request(live, "GET", "/latest")
    assert status == 200 and latest["frame_id"] == doc["frame_id"]


def test_trigger_without_saving_and_summary_only(live, monkeypatch):
    import edge.report

    encoded: list[int] = []
    real = edge.report.encode_rles

    def counting(crops, h, w):
        encoded.append(len(crops))
        return real(crops, h, w)

    monkeypatch.setattr(edge.report, "encode_rles", counting)
    before = live.metrics.get("fastsam_results_written_total")
    status, doc, _ = _request(
        live, "POST", "/trigger", json.dumps({"save": False, "masks": False})
    )
    assert status == 200 and "result_dir" not in doc
    assert set(doc) >= {"frame_id", "num_masks", "masks", "latency_ms"}
    assert all("rle" not in m for m in doc["masks"])
    assert live.metrics.get("fastsam_results_written_total") == before
    assert encoded == []  # nothing written or returned: no RLE computed
    # GET /latest returns the full result: the encodings are made when it is asked for
    status, latest, _ = _request(live, "GET", "/latest")
    assert status == 200 and latest["frame_id"] == doc["frame_id"]
    assert encoded == [latest["num_masks"]]
    assert all(m["rle"]["size"] == [120, 160] and "polygons" in m for m in latest["masks"])
    _request(live, "GET", "/latest")
    assert len(encoded) == 1  # once


@pytest.mark.parametrize(
    ("body", "headers", "status", "field", "needle"),
    [
        ("{not json", {}, 400, "body", "invalid JSON"),
        ("[1, 2]", {}, 400, "body", "expected a JSON object"),
        (b"\xff\xfe", {}, 400, "body", "UTF-8"),
        ('{"conf": 2}', {}, 400, "conf", "conf: expected a number in [0, 1], got 2"),
        ('{"iou": "high"}', {}, 400, "iou", "iou: expected a number"),
        ('{"save": "yes"}', {}, 400, "save", "save: expected true or false"),
        ('{"promt": []}', {}, 400, "promt", "promt: unknown field; allowed: prompt"),
        ("x" * 70000, {}, 413, "body", "exceed http.max_body_bytes = 65536"),
        ("{}", {"Content-Length": "abc"}, 400, "Content-Length", "invalid value"),
    ],
)
def test_bad_requests_name_the_field_and_the_service_lives_on(
    live, body, headers, status, field, needle
):
    got, doc, _ = _request(live, "POST", "/trigger", body, headers)
    assert got == status, doc
    assert doc["field"] == field and needle in doc["error"]
    ok, after, _ = _request(live, "POST", "/trigger")  # a good request afterwards still works
    assert ok == 200 and after["num_masks"] == len(after["masks"])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/healthz", 405),
        ("GET", "/trigger", 405),
        ("DELETE", "/trigger", 405),
        ("PUT", "/metrics", 405),
    ],
)
def test_wrong_paths_and_methods(live, method, path, status):
    got, doc, _ = _request(live, method, path)
    assert got == status and "error" in doc
    assert _request(live, "GET", "/healthz")[0] == 200


def test_chunked_body_is_refused(live):
    conn = http.client.HTTPConnection("127.0.0.1", live.http.port, timeout=WAIT)
    conn.putrequest("POST", "/trigger")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"2\r\n{}\r\n0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 411
    conn.close()


def test_huge_declared_body_is_refused_without_reading_it(live):
    s = socket.create_connection(("127.0.0.1", live.http.port), timeout=WAIT)
    s.sendall(b"POST /trigger HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000000\r\n\r\n")
    reply = s.recv(4096).decode()
    s.close()
    assert reply.startswith("HTTP/1.1 413")
    assert _request(live, "GET", "/healthz")[0] == 200


def test_healthz_and_metrics(live):
    status, health, _ = _request(live, "GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["model_loaded"]
    assert health["source"]["open"] and health["frame"] == {"width": 160, "height": 120}
    status, text, headers = _request(live, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    for name in (
        "fastsam_frames_total",
        "fastsam_triggers_total",
        "fastsam_dropped_total",
        "fastsam_errors_total",
        "fastsam_latency_seconds_bucket",
        "fastsam_http_requests_total",
        "fastsam_read_seconds_sum",
        "fastsam_queue_wait_seconds_sum",
        "fastsam_segment_seconds_sum",
        "fastsam_output_seconds_sum",
    ):
        assert name in text
    assert 'fastsam_triggers_total{trigger="http"}' in text


def test_trigger_with_prompts(live):
    prompt = [
        {"type": "point", "data": [80, 60], "label": 1},
        {"type": "box", "data": [10, 10, 150, 110]},
    ]
    status, doc, _ = _request(live, "POST", "/trigger", json.dumps({"prompt": prompt}))
    if not (HAS_PROMPTS and live.supports_prompts()):
        # an installation without prompt support answers 501, clearly
        assert status == 501 and "not supported" in doc["error"], doc
        return
    assert status == 200, doc
    assert doc["prompt"] == prompt
    status, doc, _ = _request(
        live, "POST", "/trigger", json.dumps({"prompt": [{"type": "point", "data": [80]}]})
    )
    assert status == 400 and doc["field"] == "prompt" and "prompt" in doc["error"]
    status, doc, _ = _request(
        live,
        "POST",
        "/trigger",
        json.dumps({"prompt": [{"type": "point", "data": [5000, 60], "label": 1}]}),
    )
    assert status == 400 and doc["field"] == "prompt", doc  # outside the 160x120 image
    assert _request(live, "POST", "/trigger")[0] == 200


def test_prompt_without_prompt_support_is_501(live, monkeypatch):
    monkeypatch.setitem(sys.modules, "edge.prompts", None)  # as if edge.prompts were missing
    status, doc, _ = _request(
        live,
        "POST",
        "/trigger",
        json.dumps({"prompt": [{"type": "text", "data": "a red circle"}]}),
    )
    assert status == 501 and doc["field"] == "prompt"
    assert "edge.prompts is missing" in doc["error"]
    assert _request(live, "POST", "/trigger")[0] == 200  # without a prompt it still works


def test_parse_trigger_body_with_a_segmenter_without_prompt_argument():
    class OldAPI:
        def supports_prompts(self):
            return False

    if HAS_PROMPTS:
        with pytest.raises(Exception, match="no prompt= argument") as exc:
            parse_trigger_body(b'{"prompt": [{"type": "text", "data": "x"}]}', OldAPI())
        assert exc.value.status == 501
    assert parse_trigger_body(b"", OldAPI()).prompts is None


def test_busy_gets_503_not_a_queue(tmp_path):
    seg = FakeSegmenter(block=True)
    svc = _start(tmp_path, seg)
    try:
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(r=_request(svc, "POST", "/trigger")))
        t.start()
        assert seg.entered.wait(WAIT)
        status, doc, headers = _request(svc, "POST", "/trigger")
        assert status == 503 and "busy" in doc["error"] and headers["Retry-After"] == "1"
        assert _request(svc, "GET", "/healthz")[0] == 200  # health still answers
        seg.gate.set()
        t.join(WAIT)
        assert first["r"][0] == 200
        assert _request(svc, "POST", "/trigger")[0] == 200
    finally:
        seg.gate.set()
        _stop(svc)


def test_token_guards_everything_but_healthz(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    svc = _start(tmp_path, FakeSegmenter(), **{"http.token_file": str(token_file)})
    try:
        assert _request(svc, "GET", "/healthz")[0] == 200
        status, doc, headers = _request(svc, "POST", "/trigger")
        assert status == 401 and doc["field"] == "authorization"
        assert headers["WWW-Authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer nope"}
        assert _request(svc, "POST", "/trigger", headers=bad)[0] == 401
        assert _request(svc, "GET", "/metrics", headers=bad)[0] == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert _request(svc, "POST", "/trigger", headers=good)[0] == 200
        assert _request(svc, "GET", "/metrics", headers=good)[0] == 200
    finally:
        _stop(svc)


def test_unix_socket(tmp_path):
    sock_path = tmp_path / "run" / "api.sock"
    svc = _start(
        tmp_path, FakeSegmenter(), **{"http.unix_socket": str(sock_path), "http.enabled": False}
    )
    try:
        assert svc.http.port is None and sock_path.exists()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(WAIT)
        s.connect(str(sock_path))
        s.sendall(
            b"POST /trigger HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["trigger"] == "http"
    finally:
        _stop(svc)
    assert not sock_path.exists()


def test_source_down_gives_503_and_the_service_recovers(tmp_path):
    from edge.service.sources import DemoSource
    from edge.service.testing import FlakySource

    clock = FakeClock()
    flaky = FlakySource(
        DemoSource(1_000_000, 2, 64, 48, loop=True, live=True), open_failures=1000, clock=clock
    )
    cfg = demo_config(
        tmp_path / "out",
        **{
            "http.enabled": True,
            "http.port": 0,
            "trigger.interval.enabled": False,
            "model.warmup": False,
        },
    )
    svc = Service(cfg, segmenter=FakeSegmenter(), source=flaky, clock=clock)
    t = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    assert svc.ready.wait(WAIT)
    svc._thread = t
    try:
        status, doc, _ = _request(svc, "POST", "/trigger")
        assert status == 503 and "source unavailable" in doc["error"]
        assert _request(svc, "GET", "/healthz")[0] == 503
        flaky.open_failures = 0  # the camera is back
        recovered = threading.Event()
        while not recovered.wait(0.005):
            if svc.source.is_open:
                recovered.set()
        assert _request(svc, "POST", "/trigger")[0] == 200
        assert _request(svc, "GET", "/healthz")[0] == 200
    finally:
        _stop(svc)
