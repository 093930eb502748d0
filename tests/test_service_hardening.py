"""The service with bad files and configurations that can never work (issue 11).

Replay skips and counts unreadable files and ends at its end; a missing picamera2, a GPIO
trigger without a pin driver, a busy port, an unknown host and an output "directory" that is a
file stop the service at start-up with one error naming the config key (no retry loop, no
traceback).
"""

from __future__ import annotations

import os
import socket
import struct
import sys

import cv2
import numpy as np
import pytest
from fakes import FakeSegmenter

from edge.service.clock import FakeClock
from edge.service.config import ConfigError, demo_config
from edge.service.runner import Service
from edge.service.sources import (
    ReplaySource,
    ResilientSource,
    SourceUnusable,
    make_source,
)

# --------------------------------------------------------------------------------------------
# replay: skip and count bad files
# --------------------------------------------------------------------------------------------


def _good(path, value=100):
    cv2.imwrite(str(path), np.full((12, 16, 3), value, np.uint8))


def _bomb(path):
    data = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    path.write_bytes(data[:16] + struct.pack(">II", 30000, 30000) + data[24:])


BAD_FILES = {
    "corrupt": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 20),
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("not an image\n"),
    "bomb": _bomb,
    "directory": lambda p: p.mkdir(),
    "fifo": lambda p: os.mkfifo(p),
    "symlink-loop": lambda p: p.symlink_to(p),
    "dangling": lambda p: p.symlink_to(p.parent / "gone"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_replay_skips_a_bad_file_and_goes_on(tmp_path, kind, position):
    names = {"first": "a0.png", "middle": "b1.png", "last": "z9.png"}
    _good(tmp_path / "a1.png", 10)
    _good(tmp_path / "b2.png", 20)
    BAD_FILES[kind](tmp_path / names[position])
    skipped = []
    src = ReplaySource(tmp_path, on_skip=skipped.append)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f.name)
        assert len(frames) < 10, "replay did not end"
    assert frames == ["a1.png", "b2.png"]
    assert src.skipped == 1 and len(skipped) == 1
    assert names[position] in skipped[0]


def test_replay_unreadable_only_file_ends_without_a_frame(tmp_path):
    path = tmp_path / "only.png"
    path.write_bytes(b"junk")
    src = ReplaySource(path)
    src.open()
    assert src.read() is None and src.skipped == 1


def test_replay_loop_skips_without_restarting(tmp_path):
    _good(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"junk")
    _good(tmp_path / "c.png")
    src = ReplaySource(tmp_path, loop=True)
    src.open()
    assert [src.read().name for _ in range(5)] == ["a.png", "c.png", "a.png", "c.png", "a.png"]
    assert src.skipped == 2


def test_replay_loop_of_only_bad_files_is_unusable(tmp_path):
    for name in ("a.png", "b.jpg"):
        (tmp_path / name).write_bytes(b"junk")
    src = ReplaySource(tmp_path, loop=True)
    src.open()
    with pytest.raises(SourceUnusable, match="source.path: none of the 2 image"):
        src.read()


def test_replay_pixel_limit_from_config(tmp_path):
    _good(tmp_path / "a.png")  # 16x12 = 192 pixels
    cfg = demo_config(
        tmp_path / "out",
        **{"source.kind": "replay", "source.path": str(tmp_path), "source.max_pixels": 191},
    )
    src = make_source(cfg.source)
    src.open()
    assert src.read() is None and src.skipped == 1
    cfg = cfg.replace(**{"source.max_pixels": 192})
    src = make_source(cfg.source)
    src.open()
    assert src.read().image.shape == (12, 16, 3)


def test_replay_path_kinds_are_named(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, needle in (
        (loop, "symlink loop"),
        (fifo, "is a FIFO"),
        (tmp_path / "nope", "does not exist"),
    ):
        with pytest.raises(OSError, match=needle):
            ReplaySource(path).open()


def test_bad_replay_files_never_reopen_the_source(tmp_path):
    for i in range(3):
        _good(tmp_path / f"g{i}.png")
        (tmp_path / f"g{i}x.png").write_bytes(b"junk")
    src = ResilientSource(ReplaySource(tmp_path), FakeClock())
    names = []
    while (f := src.read()) is not None:
        names.append(f.name)
    assert names == ["g0.png", "g1.png", "g2.png"]
    assert src.failures == 0 and src.source.skipped == 3


def test_service_replay_counts_bad_files_and_ends(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        _good(frames / f"f{i}.png", 40 * i)
    (frames / "f1x.png").write_bytes(b"junk")
    _bomb(frames / "f2x.png")
    cfg = demo_config(
        tmp_path / "out",
        **{"source.kind": "replay", "source.path": str(frames), "model.warmup": False},
    )
    svc = Service(cfg, segmenter=FakeSegmenter(), clock=FakeClock())
    summary = svc.run(install_signals=False)
    assert summary.reason == "end of source"
    assert (summary.frames, summary.written, summary.errors) == (4, 4, 2)
    assert 'fastsam_errors_total{kind="input"} 2' in svc.metrics.render()


# --------------------------------------------------------------------------------------------
# start-up: configurations that can never work
# --------------------------------------------------------------------------------------------


def _start_error(cfg, **kwargs):
    svc = Service(cfg, segmenter=FakeSegmenter(), clock=FakeClock(), max_frames=1, **kwargs)
    with pytest.raises(ConfigError) as excinfo:
        svc.run(install_signals=False)
    return str(excinfo.value)


def test_picamera2_missing_is_a_startup_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as when not installed
    cfg = demo_config(tmp_path / "out", **{"source.kind": "picamera2"})
    msg = _start_error(cfg)
    assert 'source.kind = "picamera2": cannot import picamera2' in msg


def test_gpio_without_pin_driver_is_a_startup_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-driver")
    cfg = demo_config(tmp_path / "out", **{"trigger.gpio.enabled": True})
    assert "trigger.gpio: cannot use pin 17" in _start_error(cfg)


def test_http_port_in_use_names_the_key(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = demo_config(tmp_path / "out", **{"http.enabled": True, "http.port": port})
        assert f"http.port: {port} is already in use" in _start_error(cfg)


@pytest.mark.parametrize(
    ("host", "needle"),
    [
        ("no-such-host.invalid", "http.host: cannot resolve 'no-such-host.invalid'"),
        ("192.0.2.1", "http.host: '192.0.2.1' is not an address of this machine"),
    ],
)
def test_http_bad_host_names_the_key(tmp_path, host, needle):
    cfg = demo_config(
        tmp_path / "out", **{"http.enabled": True, "http.port": 0, "http.host": host}
    )
    assert needle in _start_error(cfg)


def test_http_unix_socket_under_a_file_names_the_key(tmp_path):
    (tmp_path / "file").write_text("x")
    cfg = demo_config(
        tmp_path / "out", **{"http.unix_socket": str(tmp_path / "file" / "api.sock")}
    )
    assert "http.unix_socket" in _start_error(cfg)


def _a_file(t):
    (t / "f").write_text("x")
    return t / "f"


def _under_a_file(t):
    return _a_file(t) / "sub"


def _a_fifo(t):
    os.mkfifo(t / "p")
    return t / "p"


@pytest.mark.parametrize(
    ("make", "needle"),
    [(_a_file, "it is a file"), (_under_a_file, "its parent"), (_a_fifo, "is a FIFO")],
    ids=["file", "parent-file", "fifo"],
)
def test_output_dir_that_is_not_a_directory_names_the_key(tmp_path, make, needle):
    cfg = demo_config(make(tmp_path))
    msg = _start_error(cfg)
    assert msg.startswith("output.dir:") and needle in msg


@pytest.fixture
def restore_logging():
    """``serve`` configures the root logger (handler on the captured stderr): undo it."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_serve_cli_picamera2_missing_exits_with_one_line(
    tmp_path, monkeypatch, capsys, restore_logging
):
    from edge.cli import main

    monkeypatch.setitem(sys.modules, "picamera2", None)
    conf = tmp_path / "c.toml"
    conf.write_text(
        f'[source]\nkind = "picamera2"\n[output]\ndir = "{tmp_path / "out"}"\n'
        "[http]\nenabled = false\n[model]\nwarmup = false\n"
    )
    assert main(["serve", "--config", str(conf), "--max-frames", "1"]) == 2
    err = capsys.readouterr().err
    assert 'fastsam-edge: error: source.kind = "picamera2": cannot import' in err


# --------------------------------------------------------------------------------------------
# files named by the configuration: said what they are, never a blocking read or a traceback
# --------------------------------------------------------------------------------------------


def _config_path_cases(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    return fifo, loop


def test_config_file_kinds_and_deep_toml(tmp_path):
    from edge.service.config import load_config

    fifo, loop = _config_path_cases(tmp_path)
    for path, needle in ((fifo, "is a FIFO"), (loop, "symlink loop"), (tmp_path, "directory")):
        with pytest.raises(ConfigError, match=f"--config: .*{needle}"):
            load_config(path)
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(deep)


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("model.defaults_from", "is a FIFO"),
        ("http.token_file", "is a FIFO"),
    ],
)
def test_config_named_files_that_are_fifos(tmp_path, key, needle):
    from edge.service.config import bench_defaults, resolve_token

    fifo, _ = _config_path_cases(tmp_path)
    cfg = demo_config(tmp_path / "out", **{key: str(fifo)})
    with pytest.raises(ConfigError, match=f"{key}: .*{needle}"):
        if key == "model.defaults_from":
            bench_defaults(cfg.model)
        else:
            resolve_token(cfg.http)


def test_defaults_from_deep_json(tmp_path):
    from edge.service.config import bench_defaults

    deep = tmp_path / "bench.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    cfg = demo_config(tmp_path / "out", **{"model.defaults_from": str(deep)})
    with pytest.raises(ConfigError, match="model.defaults_from: .*nested too deeply"):
        bench_defaults(cfg.model)


def test_mqtt_password_file_fifo(tmp_path):
    from fakes import FakeMqttClient

    from edge.service.mqtt import MqttPublisher
    from edge.service.telemetry import Metrics

    fifo, _ = _config_path_cases(tmp_path)
    cfg = demo_config(
        tmp_path / "out",
        **{"mqtt.enabled": True, "mqtt.username": "u", "mqtt.password_file": str(fifo)},
    )
    pub = MqttPublisher(cfg.mqtt, FakeMqttClient, Metrics())
    with pytest.raises(ConfigError, match="mqtt.password_file: .*is a FIFO"):
        pub.start()
