"""The HTTP API: triggers with prompts, bad requests (4xx naming the field), the token, body
limits, busy (503), health and metrics, the Unix socket; the service stays alive throughout."""

from __future__ import annotations

import errno
import http.client
import json
import logging
import re
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from fakes import FakeSegmenter, start_service, stop_service

from edge.service.clock import FakeClock
from edge.service.config import ConfigError, demo_config
from edge.service.http import (
    AUTH_BACKOFF_MAX_S,
    AUTH_BACKOFF_S,
    AUTH_FREE_FAILURES,
    AUTH_FREE_FAILURES_ALL,
    AUTH_LOG_INTERVAL_S,
    AUTH_MAX_CLIENTS,
    AuthThrottle,
    client_key,
    default_allowed_hosts,
)
from edge.service.runner import Service

WAIT = 60.0
JSON = {"Content-Type": "application/json"}


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
    return start_service(Service(cfg, segmenter=seg, clock=FakeClock()))


_stop = stop_service


def _request(
    svc: Service,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict | None = None,
) -> tuple[int, dict | str, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", svc.http.port, timeout=WAIT)
    headers = {**(JSON if method == "POST" else {}), **(headers or {})}
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers)
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
    import edge.result_schema

    encoded: list[int] = []
    real = edge.result_schema.encode_rles

    def counting(crops, h, w):
        encoded.append(len(crops))
        return real(crops, h, w)

    monkeypatch.setattr(edge.result_schema, "encode_rles", counting)
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
    s.sendall(
        b"POST /trigger HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000000000\r\n\r\n"
    )
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
    token_file.write_text("s3cret-token-0123\n")
    svc = _start(tmp_path, FakeSegmenter(), **{"http.token_file": str(token_file)})
    try:
        assert _request(svc, "GET", "/healthz")[0] == 200
        status, doc, headers = _request(svc, "POST", "/trigger")
        assert status == 401 and doc["field"] == "authorization"
        assert headers["WWW-Authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer nope"}
        assert _request(svc, "POST", "/trigger", headers=bad)[0] == 401
        assert _request(svc, "GET", "/metrics", headers=bad)[0] == 401
        good = {"Authorization": "Bearer s3cret-token-0123"}
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
            b"POST /trigger HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
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
    from fakes import FlakySource

    from edge.service.sources import DemoSource

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


# ------------------------------------------------------------------------------------------
# a server on a network (issue 11): load, cancellation, framing, browsers, hostile JSON,
# disconnects, health while writes fail, the Unix socket
# ------------------------------------------------------------------------------------------


def _raw(svc: Service, data: bytes, *, hold: bool = True) -> tuple[bytes, float]:
    """Send raw bytes (keeping the write side open if ``hold``), read until the server closes.

    Returns:
        Everything received and the seconds until the server closed the connection.
    """
    s = socket.create_connection(("127.0.0.1", svc.http.port), timeout=WAIT)
    t0 = time.monotonic()
    try:
        s.sendall(data)
        if not hold:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out, time.monotonic() - t0
    finally:
        s.close()


def _statuses(reply: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"^HTTP/1\.1 (\d{3}) ", reply, re.M)]


def _body(reply: bytes) -> dict:
    return json.loads(reply.partition(b"\r\n\r\n")[2])


def _post(path: str = "/trigger", body: bytes = b"", extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
    if "Content-Length" not in extra:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def test_a_burst_of_200_connections_gets_answers_not_resets(tmp_path, caplog):
    n, limit = 200, 8
    svc = _start(tmp_path, FakeSegmenter(), **{"http.max_connections": limit})
    caplog.set_level(logging.WARNING, logger="edge.service.http")
    try:
        # one result first: the output stage's overlay thread starts with it, not in the burst
        assert _request(svc, "POST", "/trigger", "{}")[0] == 200
        results: list = [None] * n
        barrier = threading.Barrier(n + 1)
        stop_sampling = threading.Event()
        peak = [0]

        def sample() -> None:
            while not stop_sampling.wait(0.002):
                peak[0] = max(peak[0], threading.active_count())

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", svc.http.port, timeout=WAIT)
            barrier.wait()
            t0 = time.monotonic()
            try:
                if i % 2:
                    conn.request("POST", "/trigger", body=b"", headers=JSON)
                else:
                    conn.request("GET", "/healthz")
                resp = conn.getresponse()
                doc = json.loads(resp.read())
                results[i] = (
                    resp.status,
                    time.monotonic() - t0,
                    resp.getheader("Retry-After"),
                    doc,
                )
            except Exception as exc:  # a reset, a timeout: what this test rules out
                results[i] = exc
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        baseline = threading.active_count()  # the clients, waiting at the barrier
        sampler = threading.Thread(target=sample)
        sampler.start()
        barrier.wait()
        for t in threads:
            t.join(WAIT)
        stop_sampling.set()
        sampler.join()
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"{len(errors)} of {n} failed, e.g. {errors[0]!r}"
        statuses = [r[0] for r in results]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(200) >= limit // 2  # the bound serves, it does not just refuse
        busy = [r for r in results if r[0] == 503]
        assert all(r[2] and "busy" in r[3]["error"] for r in busy)
        slowest = max(r[1] for r in results)
        assert slowest < 10.0, f"a request waited {slowest:.1f} s"
        # handler threads stay within http.max_connections (+1: the sampler itself)
        assert peak[0] - baseline <= limit + 1, (peak[0], baseline)
        refused = [r.getMessage() for r in caplog.records if "max_connections" in r.getMessage()]
        assert len(refused) <= 1  # one warning a minute, however many were refused
        assert _request(svc, "GET", "/healthz")[0] == 200
    finally:
        _stop(svc)


def test_a_timed_out_request_is_cancelled_and_the_queue_bound_holds(tmp_path):
    seg = FakeSegmenter(block=True)
    svc = _start(tmp_path, seg, **{"http.request_timeout_s": 1.0, "trigger.queue_size": 1})
    try:
        for _ in range(4):  # the first hangs in the segmenter, the others wait behind it
            status, doc, _ = _request(svc, "POST", "/trigger")
            assert status == 504 and "http.request_timeout_s" in doc["error"], doc
        health = _request(svc, "GET", "/healthz")[1]
        assert health["queue_depth"] == 0  # none of the timed-out requests is still queued
        assert svc.metrics.get("fastsam_dropped_total") == 3
        assert "cancelled" in svc.metrics_text()
        seg.gate.set()
        status, doc, _ = _request(svc, "POST", "/trigger")
        assert status == 200, doc
        assert seg.calls == 2  # the hung one and this one: the cancelled ones never ran
    finally:
        seg.gate.set()
        _stop(svc)


@pytest.mark.parametrize(
    ("extra", "body", "needle"),
    [
        ("Content-Length: 2\r\nContent-Length: 2\r\n", b"{}", "sent 2 times"),
        ("Content-Length: 2\r\nContent-Length: 40\r\n", b"{}", "sent 2 times"),
        ("Content-Length: +2\r\n", b"{}", "invalid value"),
        ("Content-Length: 0x2\r\n", b"{}", "invalid value"),
        ("Content-Length: -1\r\n", b"{}", "invalid value"),
        ("Content-Length: 1_0\r\n", b"{}", "invalid value"),
        ("Content-Length: \xb2\r\n", b"{}", "invalid value"),  # a superscript digit
        ("Content-Length: 99999999999999999999999\r\n", b"{}", "invalid value"),
    ],
)
def test_bad_content_length_is_a_fast_400_and_closes(live, extra, body, needle):
    reply, seconds = _raw(live, _post(body=body, extra=extra))
    assert _statuses(reply) == [400], reply
    doc = _body(reply)
    assert doc["field"] == "Content-Length" and needle in doc["error"]
    assert b"Connection: close" in reply and seconds < 5.0


def test_a_short_body_is_a_fast_400(live):
    reply, seconds = _raw(live, _post(body=b'{"save"', extra="Content-Length: 100\r\n"))
    assert _statuses(reply) == [400], reply
    assert "7 of 100 bytes" in _body(reply)["error"] and seconds < 6.0


def test_the_body_of_a_rejected_post_is_never_a_second_request(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("tok-0123456789abc")
    svc = _start(tmp_path, FakeSegmenter(), **{"http.token_file": str(token_file)})
    try:
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for extra in ("", "Authorization: Bearer wrong\r\n"):
            reply, _ = _raw(svc, _post(body=smuggled, extra=extra), hold=False)
            assert _statuses(reply) == [401], reply  # one answer, then the connection closed
        for extra, status in (("", 401), ("Authorization: Bearer tok-0123456789abc\r\n", 413)):
            big = _post(body=smuggled, extra=extra + "Content-Length: 70000\r\n")
            reply, _ = _raw(svc, big + b"x" * (70000 - len(smuggled)), hold=False)
            assert _statuses(reply) == [status], reply
    finally:
        _stop(svc)


def test_a_trickled_request_head_is_cut_off_at_the_deadline(tmp_path, monkeypatch):
    from edge.service import http as http_module

    monkeypatch.setattr(http_module._Handler, "timeout", 1.0)
    svc = _start(tmp_path, FakeSegmenter())
    try:
        s = socket.create_connection(("127.0.0.1", svc.http.port), timeout=WAIT)
        t0 = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed_after = None
        for i in range(12):  # a header line every 0.25 s: each byte is within the idle timeout
            time.sleep(0.25)
            try:
                s.sendall(f"X-{i}: 1\r\n".encode())
            except OSError:
                closed_after = time.monotonic() - t0
                break
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed_after = time.monotonic() - t0
                    break
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
        s.close()
        assert closed_after is not None and closed_after < 2.5, closed_after
        assert _request(svc, "GET", "/healthz")[0] == 200
    finally:
        _stop(svc)


def test_every_body_is_read_on_a_kept_alive_connection(live):
    get = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello"
    last = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    reply, _ = _raw(live, get + last)
    assert _statuses(reply) == [200, 200], reply


def test_error_answers_close_the_connection(live):
    second = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for first in (_post(body=b"{bad"), b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
        reply, _ = _raw(live, first + second, hold=False)
        assert len(_statuses(reply)) == 1 and b"Connection: close" in reply, reply


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"BREW /trigger HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 501),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ],
)
def test_requests_the_parser_rejects_get_a_json_error_and_close(live, raw, status):
    second = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    reply, _ = _raw(live, raw + second, hold=False)
    assert _statuses(reply) == [status] and b"Connection: close" in reply, reply[:300]
    assert "error" in _body(reply)


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        (None, b""),
        (None, b"{}"),
        ("text/plain", b"{}"),
        ("text/plain", b""),
        ("application/x-www-form-urlencoded", b"a=1"),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/jsonp", b"{}"),
    ],
)
def test_a_post_that_is_not_json_is_415_and_triggers_nothing(live, ctype, body):
    before = live.metrics.get("fastsam_triggers_total")
    headers = {"Content-Type": ctype} if ctype else {"Content-Type": ""}
    status, doc, _ = _request(live, "POST", "/trigger", body, headers)
    assert status == 415 and doc["field"] == "Content-Type", doc
    assert "application/json" in doc["error"]
    assert live.metrics.get("fastsam_triggers_total") == before


def test_json_with_a_charset_is_accepted(live):
    headers = {"Content-Type": "Application/JSON; charset=utf-8"}
    assert _request(live, "POST", "/trigger", b"{}", headers)[0] == 200


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 421),
        ("evil.example:{port}", 421),
        ("127.0.0.1.nip.io:{port}", 421),
        ("localhost.evil.example", 421),
        ("192.168.1.10", 421),  # not the address this client connected to
        ("localhost:8080:1", 421),
        ("localhost", 200),
        ("LOCALHOST:{port}", 200),
        ("127.0.0.1:{port}", 200),
        ("[::1]:{port}", 200),
        ("localhost.", 200),
    ],
)
def test_host_must_name_this_device(live, host, status):
    port = live.http.port
    request = f"GET /healthz HTTP/1.1\r\nHost: {host.format(port=port)}\r\n\r\n"
    reply, _ = _raw(live, request.encode(), hold=False)
    assert _statuses(reply)[:1] == [status], reply
    if status == 421:
        doc = _body(reply)
        assert doc["field"] == "Host" and "http.allowed_hosts" in doc["error"]


def test_host_missing_or_twice_is_400(live):
    for head in (
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
    ):
        reply, _ = _raw(live, head.encode(), hold=False)
        assert _statuses(reply) == [400] and _body(reply)["field"] == "Host", reply


def test_allowed_hosts_and_the_connected_address(tmp_path):
    svc = _start(
        tmp_path,
        FakeSegmenter(),
        **{"http.host": "127.0.0.2", "http.allowed_hosts": ["camera.lan", "Proxy.Example:443"]},
    )
    try:

        def status(host: str) -> int:
            s = socket.create_connection(("127.0.0.2", svc.http.port), timeout=WAIT)
            try:
                s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                return _statuses(s.recv(65536))[0]
            finally:
                s.close()

        assert status("camera.lan") == 200
        assert status("proxy.example") == 200
        assert status(f"127.0.0.2:{svc.http.port}") == 200  # the address connected to
        assert status("127.0.0.3") == 421
        assert status("evil.example") == 421
    finally:
        _stop(svc)


def test_default_allowed_hosts_depend_on_the_bind_address():
    name = socket.gethostname().lower()
    loop = default_allowed_hosts("127.0.0.1")
    lan = default_allowed_hosts("0.0.0.0")
    assert {"localhost", "127.0.0.1", "::1"} <= loop <= lan
    assert {name, name.split(".")[0] + ".local"} <= lan
    if name != "localhost":
        assert name not in loop
    assert "*" in default_allowed_hosts("127.0.0.1", ("*",))


def test_continue_comes_only_after_auth_and_limits(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("tok-0123456789abc")
    svc = _start(tmp_path, FakeSegmenter(), **{"http.token_file": str(token_file)})
    try:

        def first_answer(extra: str) -> tuple[socket.socket, bytes]:
            s = socket.create_connection(("127.0.0.1", svc.http.port), timeout=WAIT)
            s.sendall(_post(extra="Expect: 100-continue\r\n" + extra))
            return s, s.recv(65536)

        for extra in ("Content-Length: 2\r\n", "Content-Length: 70000\r\n"):
            s, head = first_answer(extra)  # no token: 401 at once, never "100 Continue"
            s.close()
            assert head.startswith(b"HTTP/1.1 401"), head
        s, head = first_answer(
            "Authorization: Bearer tok-0123456789abc\r\nContent-Length: 70000\r\n"
        )
        s.close()
        assert head.startswith(b"HTTP/1.1 413"), head
        s, head = first_answer("Authorization: Bearer tok-0123456789abc\r\nContent-Length: 2\r\n")
        try:
            assert head == b"HTTP/1.1 100 Continue\r\n\r\n", head
            s.sendall(b"{}")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            s.close()
    finally:
        _stop(svc)


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ("[" * 30000 + "]" * 30000, "body", "nested too deeply"),
        ('{"prompt": ' + "[" * 40 + "]" * 40 + "}", "body", "nested too deeply"),
        ('{"conf": 1' + "0" * 5000 + "}", "body", "5001 digits"),
        ('{"conf": -1' + "0" * 100 + "}", "body", "101 digits"),
        ('{"conf": 1e400}', "body", "out of range"),
        ('{"conf": NaN}', "body", "NaN is not valid JSON"),
        ('{"conf": -Infinity}', "body", "Infinity is not valid JSON"),
        ('{"prompt": [{"type": "point", "data": [1e400, 5]}]}', "body", "out of range"),
        ('{"prompt": [{"type": "box", "data": [0, 0, 1' + "0" * 400 + ", 5]}]}", "body", "digits"),
    ],
)
def test_hostile_json_is_400_not_500(live, body, field, needle):
    status, doc, _ = _request(live, "POST", "/trigger", body)
    assert status == 400, doc
    assert doc["field"] == field and needle in doc["error"], doc
    assert _request(live, "GET", "/healthz")[0] == 200


def test_huge_integers_in_a_prompt_are_400(live):
    big = int("9" * 60)  # within the digit limit, beyond any image
    prompt = [{"type": "point", "data": [big, 5], "label": 1}]
    status, doc, _ = _request(live, "POST", "/trigger", json.dumps({"prompt": prompt}))
    assert status == 400 and doc["field"] == "prompt", doc


def _reset(s: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a client that crashes or is killed."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_a_client_that_goes_away_is_one_log_line(tmp_path, caplog, capfd):
    seg = FakeSegmenter(block=True)
    svc = _start(tmp_path, seg)
    caplog.set_level(logging.INFO, logger="edge.service.http")
    try:
        s = socket.create_connection(("127.0.0.1", svc.http.port), timeout=WAIT)
        s.sendall(_post())
        assert seg.entered.wait(WAIT)
        _reset(s)  # gone before its answer is written
        s = socket.create_connection(("127.0.0.1", svc.http.port), timeout=WAIT)
        s.sendall(b"GET /healthz HT")
        time.sleep(0.2)
        _reset(s)  # gone in the middle of its request line
        seg.gate.set()
        deadline = time.monotonic() + WAIT
        lines = []
        while time.monotonic() < deadline and len(lines) < 2:
            lines = [r for r in caplog.records if "went away" in r.getMessage()]
            time.sleep(0.05)
        assert len(lines) == 2, [r.getMessage() for r in caplog.records]
        assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)
        assert _request(svc, "POST", "/trigger")[0] == 200
    finally:
        seg.gate.set()
        _stop(svc)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_healthz_is_degraded_while_results_cannot_be_written(live, monkeypatch):
    import edge.service.sink as sink_module

    def no_space(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(sink_module, "_rename_into_place", no_space)
        status, doc, _ = _request(live, "POST", "/trigger")
        assert status == 200 and "result_dir" not in doc  # segmented, not stored
        status, health, _ = _request(live, "GET", "/healthz")
        assert status == 503 and health["status"] == "degraded", health
        assert any("ENOSPC" in p and "cannot be written" in p for p in health["problems"])
    assert _request(live, "POST", "/trigger")[0] == 200  # space again: the next result lands
    status, health, _ = _request(live, "GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["problems"] == []


def test_a_second_instance_does_not_take_a_live_unix_socket(tmp_path):
    sock_path = tmp_path / "api.sock"
    cfg = {"http.unix_socket": str(sock_path), "http.enabled": False}
    first = _start(tmp_path / "a", FakeSegmenter(), **cfg)
    try:
        second = Service(
            demo_config(tmp_path / "b", **cfg), segmenter=FakeSegmenter(), clock=FakeClock()
        )
        with pytest.raises(ConfigError, match="http.unix_socket: .* in use by another"):
            second.start()
        second.shutdown()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(WAIT)
        s.connect(str(sock_path))  # the first one's socket is still there and answering
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.close()
    finally:
        _stop(first)
    assert not sock_path.exists()


def test_a_stale_unix_socket_is_replaced_and_a_file_is_refused(tmp_path):
    sock_path = tmp_path / "api.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))  # a socket file nobody listens on: left by a crash
    stale.close()
    svc = _start(
        tmp_path, FakeSegmenter(), **{"http.unix_socket": str(sock_path), "http.enabled": False}
    )
    _stop(svc)
    sock_path.write_text("not a socket")
    svc = Service(
        demo_config(tmp_path / "c", **{"http.unix_socket": str(sock_path)}),
        segmenter=FakeSegmenter(),
        clock=FakeClock(),
    )
    with pytest.raises(ConfigError, match="http.unix_socket: .* is not a socket"):
        svc.start()
    svc.shutdown()
    assert sock_path.read_text() == "not a socket"


class _BareAPI:
    """Just enough of the service for an ApiServer with its own routes."""

    def __init__(self) -> None:
        self.counts: list[tuple[str, int]] = []

    def count_request(self, path: str, status: int) -> None:
        self.counts.append((path, status))


def test_new_routes_get_the_protections_and_streams_do_not_count(tmp_path):
    from edge.service.http import ApiServer, Route, default_routes

    release = threading.Event()
    entered = threading.Semaphore(0)

    def hold(h, _body: bytes) -> None:
        entered.release()
        release.wait(WAIT)
        h.send_json(200, {"ok": True})

    def echo(h, body: bytes) -> None:
        h.send_json(200, {"got": json.loads(body or b"null")})

    routes = {
        **default_routes(),
        "/stream": {"GET": Route(hold, counted=False)},
        "/slow": {"GET": Route(hold)},
        "/echo": {
            "POST": Route(echo),
            "GET": Route(lambda h, _b: h.send_json(200, {}), public=True),
        },
    }
    server = ApiServer(_BareAPI(), port=0, token="tok", max_connections=1, routes=routes)
    server.start()
    port = server.port
    auth = "Authorization: Bearer tok\r\n"

    def send(request: str) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        s.sendall(request.encode())
        return s

    def answer(request: str) -> bytes:
        s = send(request)
        try:
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out
        finally:
            s.close()

    ping = "GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    held: list[socket.socket] = []
    try:
        for _ in range(3):  # three streams open at once: none holds the one slot
            held.append(send(f"GET /stream HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n"))
            assert entered.acquire(timeout=WAIT)
        assert _statuses(answer(ping)) == [200]
        held.append(send(f"GET /slow HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n"))
        assert entered.acquire(timeout=WAIT)  # an ordinary request holds the slot...
        busy = answer(ping)  # ...so the next connection gets the fast 503
        assert _statuses(busy) == [503] and b"http.max_connections" in busy
        release.set()
        for s in held:
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            s.close()
        # the slot comes back when the handler thread ends (after its lingering close), a
        # moment after the client has its answer: wait for it
        deadline = time.monotonic() + WAIT
        while _statuses(answer(ping)) != [200]:
            assert time.monotonic() < deadline, "the slot never came back"
            time.sleep(0.05)
        post = (
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}"
            "Content-Length: 2\r\n\r\n[]"
        )
        json_auth = auth + "Content-Type: application/json\r\n"
        for host, extra, status in [
            ("localhost", json_auth, 200),
            ("evil.example", json_auth, 421),
            ("localhost", "Content-Type: application/json\r\n", 401),
            ("localhost", auth + "Content-Type: text/plain\r\n", 415),
        ]:
            reply = answer(post.format(host=host, extra=extra))
            assert _statuses(reply) == [status], (host, extra, reply)
    finally:
        release.set()
        for s in held:
            s.close()
        server.close()


def test_summary_answer_has_relative_files_and_the_prompt_notes(live):
    """``"masks": false``: files as in the full result (relative to result_dir), notes kept."""
    # the same pixel as positive and negative point: every mask with one has the other
    prompt = {"type": "point", "data": [[5, 5], [5, 5]], "label": [1, 0]}
    status, doc, _ = _request(
        live, "POST", "/trigger", json.dumps({"masks": False, "prompt": prompt})
    )
    assert status == 200, doc
    assert doc["num_masks"] == 0 and doc["prompt_notes"], doc
    assert doc["files"]["json"] == "result.json" and not Path(doc["files"]["json"]).is_absolute()
    result_dir = Path(doc["result_dir"])
    assert all((result_dir / name).is_file() for name in doc["files"].values())
    written = json.loads((result_dir / "result.json").read_text())
    assert written["prompt_notes"] == doc["prompt_notes"]


# ------------------------------------------------------------------------------------------
# wrong credentials: one throttle, per address and overall (issue 23)
# ------------------------------------------------------------------------------------------

LONG_TOKEN = "s3cret-token-0123"


class _Tick:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("failures", "addresses", "own_wait", "other_wait"),
    [
        (AUTH_FREE_FAILURES - 1, 1, 0.0, 0.0),  # a few typos are free
        (AUTH_FREE_FAILURES, 1, AUTH_BACKOFF_S, 0.0),  # then this address backs off
        (AUTH_FREE_FAILURES + 3, 1, AUTH_BACKOFF_S * 8, 0.0),  # doubling per failure
        (AUTH_FREE_FAILURES + 40, 1, AUTH_BACKOFF_MAX_S, 0.0),  # capped
        # many addresses with a few failures each: everyone backs off
        (AUTH_FREE_FAILURES_ALL, AUTH_FREE_FAILURES_ALL, 0.0, AUTH_BACKOFF_S),
    ],
)
def test_throttle_backs_off_per_address_and_overall(failures, addresses, own_wait, other_wait):
    clock = _Tick()
    throttle = AuthThrottle(clock)
    for i in range(failures):
        if addresses == 1:
            clock.t += 2.0  # one address alone never fills the overall bucket
        throttle.failed(f"10.0.0.{i % addresses + 1}")
    if addresses == 1:
        assert throttle.retry_after("10.0.0.1") == pytest.approx(own_wait)
    assert throttle.retry_after("192.0.2.7") == pytest.approx(other_wait)
    assert throttle.failures_total == failures


def test_throttle_forgets_after_a_success_and_bounds_its_addresses():
    clock = _Tick()
    throttle = AuthThrottle(clock)
    for _ in range(AUTH_FREE_FAILURES):
        throttle.failed("10.0.0.1")
    clock.t += AUTH_BACKOFF_S + 0.1
    assert throttle.retry_after("10.0.0.1") == 0
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1")  # counting starts again
    assert throttle.retry_after("10.0.0.1") == 0
    for i in range(AUTH_MAX_CLIENTS + 500):  # a flood from many addresses stays bounded
        clock.t += AUTH_BACKOFF_MAX_S  # (past the overall back-off)
        throttle.failed(f"fd00::{i:x}:1")  # IPv6: one /64 = one client
        throttle.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    st = throttle.stats()
    assert st["entries"] <= AUTH_MAX_CLIENTS and st["bytes"] <= st["max_bytes"]
    assert st["evictions"] > 0
    assert client_key("fd00::1:2:3:4") == client_key("fd00::9:9:9:9") == "fd00::/64"
    assert client_key("::ffff:10.1.2.3") == "10.1.2.3"


def test_throttle_logs_one_warning_a_minute_with_the_count(caplog):
    caplog.set_level(logging.WARNING, logger="edge.service.http")
    clock = _Tick()
    throttle = AuthThrottle(clock)
    for _ in range(100):
        throttle.failed("10.0.0.1")
        throttle.retry_after("10.0.0.1")
        clock.t += 0.1  # 10 s in all
    assert len(caplog.records) == 1 and "1 wrong credential(s)" in caplog.text
    clock.t += AUTH_LOG_INTERVAL_S
    throttle.flush_log()  # the accept loop calls this while nothing else happens
    assert len(caplog.records) == 2
    assert "99 wrong credential(s) from 1 address(es)" in caplog.records[1].getMessage()
    throttle.flush_log()
    assert len(caplog.records) == 2  # nothing new, nothing logged


def test_wrong_bearer_tokens_get_429_without_a_check_and_healthz_answers(tmp_path):
    svc = _start(tmp_path, FakeSegmenter(), **{"http.token": LONG_TOKEN})
    try:
        bad = {"Authorization": "Bearer guess"}
        statuses = [_request(svc, "GET", "/latest", headers=bad)[0] for _ in range(12)]
        assert statuses[:AUTH_FREE_FAILURES] == [401] * AUTH_FREE_FAILURES
        assert set(statuses[AUTH_FREE_FAILURES:]) == {429}
        status, doc, headers = _request(svc, "GET", "/latest", headers=bad)
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert doc["field"] == "authorization"
        # during the back-off even the right token is not checked (no oracle), but requests
        # without credentials and /healthz answer as always
        good = {"Authorization": f"Bearer {LONG_TOKEN}"}
        assert _request(svc, "GET", "/metrics", headers=good)[0] == 429
        assert _request(svc, "GET", "/latest")[0] == 401
        assert _request(svc, "GET", "/healthz")[0] == 200
        assert svc.http.throttle.failures_total == AUTH_FREE_FAILURES
        assert svc.http.throttle.throttled_total >= 8
    finally:
        _stop(svc)


def test_a_non_ascii_token_works_as_bearer(tmp_path):
    token = "пароль-камеры-✓-2026"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    svc = _start(tmp_path, FakeSegmenter(), **{"http.token_file": str(token_file)})
    try:
        for sent, status in ((token, 200), (token[:-1] + "7", 401)):
            head = (
                "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                f"Authorization: Bearer {sent}\r\n\r\n"
            )
            reply, _ = _raw(svc, head.encode("utf-8"), hold=False)  # as curl sends it
            assert _statuses(reply) == [status], reply[:300]
    finally:
        _stop(svc)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("qwxz5", "has 5 characters, at least 16"),
        ("with space inside-0123", "whitespace or control"),
        ("tab\tinside-0123456789", "whitespace or control"),
    ],
)
def test_bad_tokens_are_refused_at_start_with_how_to_make_one(tmp_path, value, match):
    from edge.service.config import resolve_token

    token_file = tmp_path / "token"
    token_file.write_text(value)
    with pytest.raises(ConfigError, match=match) as in_config:
        demo_config(tmp_path, **{"http.token": value})
    cfg = demo_config(tmp_path, **{"http.token_file": str(token_file)})
    with pytest.raises(ConfigError, match=match) as in_file:  # what start() calls first
        resolve_token(cfg.http)
    for err in (in_config, in_file):
        assert "openssl rand -hex 16" in str(err.value) and value not in str(err.value)


@pytest.mark.parametrize(
    ("host", "changes", "refused"),
    [
        ("0.0.0.0", {}, True),
        ("192.0.2.1", {}, True),
        ("::", {}, True),
        ("0.0.0.0", {"http.allow_unauthenticated": True}, False),
        ("0.0.0.0", {"http.token": LONG_TOKEN}, False),
        ("127.0.0.1", {}, False),
        ("localhost", {}, False),
        ("::1", {}, False),
        ("0.0.0.0", {"http.enabled": False, "http.unix_socket": "/run/x.sock"}, False),
    ],
)
def test_a_network_host_without_a_token_is_refused(host, changes, refused):
    from edge.service.config import ServiceConfig, check_exposure, resolve_token

    cfg = ServiceConfig().replace(**{"http.host": host, **changes}).http
    if refused:
        with pytest.raises(ConfigError) as err:
            check_exposure(cfg, resolve_token(cfg))
        assert "http.host" in str(err.value) and "http.token_file" in str(err.value)
        assert "http.allow_unauthenticated" in str(err.value)
    else:
        check_exposure(cfg, resolve_token(cfg))


def test_serve_refuses_a_network_host_without_a_token_with_exit_2(tmp_path, capsys):
    from edge.cli import main

    code = main(
        ["serve", "--demo", "--http", "--out", str(tmp_path), "--set", 'http.host="0.0.0.0"',
         "--set", "http.port=0", "--max-frames", "1"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "http.host" in err and "http.token_file" in err
    assert not list(tmp_path.iterdir())  # refused before anything ran


def test_metrics_show_every_client_fed_cache_with_its_bound(tmp_path):
    from edge.lru import BoundedLRU

    words: BoundedLRU[str, str] = BoundedLRU(100, 4096)
    for i in range(1000):  # a flood of new words
        words.put(f"word{i}", f"w o r d {i}</w>")

    class TextSegmenter(FakeSegmenter):
        def cache_stats(self) -> dict[str, dict[str, int]]:
            return {"bpe": words.stats()}

    svc = _start(tmp_path, TextSegmenter())
    try:
        status, text, _ = _request(svc, "GET", "/metrics")
        assert status == 200
        values = dict(
            re.findall(r'^(fastsam_cache_\w+\{cache="\w+"\}) (\S+)$', text, re.M)  # type: ignore[arg-type]
        )
        assert float(values['fastsam_cache_entries{cache="bpe"}']) == len(words) <= 100
        assert float(values['fastsam_cache_bytes{cache="bpe"}']) == words.nbytes <= 4096
        assert float(values['fastsam_cache_limit_bytes{cache="bpe"}']) == 4096
        assert float(values['fastsam_cache_evictions_total{cache="bpe"}']) == words.evictions
        for cache in ("thumbnails", "auth_clients", "sessions", "viewers"):
            assert f'fastsam_cache_limit_bytes{{cache="{cache}"}}' in values
    finally:
        _stop(svc)
