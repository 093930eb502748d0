"""``source.kind = "stream"``: a real MJPEG-over-HTTP camera served on 127.0.0.1 in the test,
read by OpenCV's FFmpeg backend on the source's own thread.

No timings are asserted: waits are on conditions (frames received, the reader's error) with
generous upper bounds.
"""

from __future__ import annotations

import threading

import pytest
from fakes import FakeSegmenter

from edge.bench.stream import MjpegCamera as MjpegServer
from edge.bench.stream import read_number as frame_number
from edge.service.clock import Clock
from edge.service.config import ConfigError, ServiceConfig, redact_url
from edge.service.runner import Service
from edge.service.sources import (
    ResilientSource,
    SourceDown,
    SourceError,
    StreamSource,
    make_source,
)

WAIT = 30.0


def _wait_until(cond, what: str) -> None:
    ev = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if cond():
            return
        ev.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_reads_frames_keeping_only_the_newest():
    with MjpegServer(fps=100) as server:
        src = StreamSource(server.url, read_timeout_s=10)
        src.open()
        try:
            first = src.read()
            assert first is not None and first.image.shape == (240, 320, 3)
            assert frame_number(first.image) == 0
            _wait_until(lambda: src.received >= 20, "20 frames received")
            newest = src.received - 1
            frame = src.read()
            assert frame is not None
            # not the next frame in line (a growing backlog) but the newest one, or later
            assert frame_number(frame.image) >= newest
        finally:
            src.close()


def test_credentials_come_from_the_file_and_never_show(tmp_path):
    secret = tmp_path / "camera.credentials"
    secret.write_text("viewer:p@ss:word\n")
    with MjpegServer(credentials="viewer:p@ss:word") as server:
        cfg = ServiceConfig().replace(
            **{
                "source.kind": "stream",
                "source.url": server.url,
                "source.credentials_file": str(secret),
                "source.read_timeout_s": 10.0,
            }
        )
        src = make_source(cfg.source)
        assert "p@ss" not in src.name and src.name == f"stream:{server.url}"
        src.open()
        try:
            frame = src.read()
            assert frame is not None and frame_number(frame.image) >= 0
        finally:
            src.close()
        wrong = StreamSource(server.url, read_timeout_s=10, credentials="viewer:nope-secret")
        with pytest.raises(SourceError, match="stream down") as err:
            wrong.open()
        assert "nope-secret" not in str(err.value)


def test_a_stream_that_drops_mid_stream_is_reopened():
    with MjpegServer(fps=100, drop_after=5) as server:
        src = ResilientSource(StreamSource(server.url, read_timeout_s=10), Clock(), 0.0, 0.0)
        numbers: list[int] = []
        downs = 0
        while len(numbers) < 12 and downs < 10:
            try:
                frame = src.read()
            except SourceDown as exc:
                assert "stream down" in str(exc)
                downs += 1
                continue
            assert frame is not None
            numbers.append(frame_number(frame.image))
        src.close()
        assert downs >= 1 and server.connections >= 2  # it dropped, and it came back
        assert numbers == sorted(numbers) and len(numbers) == 12


def test_healthz_says_stream_down_while_the_server_is_down(tmp_path):
    with MjpegServer(fps=50) as server:
        server.down.set()
        cfg = ServiceConfig().replace(
            **{
                "source.kind": "stream",
                "source.url": server.url.replace("http://", "http://admin:hunter22@"),
                "source.read_timeout_s": 5.0,
                "source.reopen_backoff_s": 0.0,
                "source.reopen_backoff_max_s": 0.0,
                "model.warmup": False,
                "output.dir": str(tmp_path / "out"),
                "http.enabled": False,
            }
        )
        svc = Service(cfg, segmenter=FakeSegmenter())
        svc.start()
        try:
            code, body = svc.health()
            assert code == 503 and any("stream down" in p for p in body["problems"])
            text = str(body)
            assert "hunter22" not in text and "admin" not in text
            assert (
                body["source"]["name"] == f"stream:{server.url.replace('http://', 'http://***@')}"
            )
            server.down.clear()
            assert svc.source.try_open()
            code, body = svc.health()
            assert body["source"]["open"] and not any("stream" in p for p in body["problems"])
        finally:
            svc.shutdown()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://cam.lan:554/s1", "rtsp://cam.lan:554/s1"),
        ("rtsp://u:pw@cam.lan:554/s1", "rtsp://***@cam.lan:554/s1"),
        ("http://cam.lan/video.mjpg?user=a&pwd=b", "http://cam.lan/video.mjpg?***"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("http://u@host/x", "http://***@host/x"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"source.kind": "stream"}, "source.url"),
        ({"source.kind": "stream", "source.url": "camera.lan"}, "source.url"),
        ({"source.kind": "stream", "source.url": "rtsp://a b"}, "source.url"),
    ],
)
def test_stream_config_errors_name_the_key(changes, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ServiceConfig().replace(**changes)


def test_a_bad_url_error_hides_the_password():
    with pytest.raises(ConfigError) as err:
        ServiceConfig().replace(**{"source.kind": "stream", "source.url": "rtsp://u:pw@x y"})
    assert "pw" not in str(err.value)
