"""Service configuration: one TOML file, read with ``tomllib``.

The schema is the set of dataclasses below. Every field carries its documentation, and
:func:`render_example_config` writes ``config/config.example.toml`` from them, so the example
always lists every key with its default (a test keeps the committed file in sync).

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError`, whose message
names the file and the dotted key (``trigger.motion.threshold``) and suggests the closest known
key for a typo.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import tomllib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.demo import is_demo_name
from edge.errors import FastSAMEdgeError
from edge.paths import describe_path_kind
from edge.prefilter import DENSE_SHORTLIST, TEXT_PREFILTERS

DEFAULT_CONFIG_PATH = "/etc/fastsam-edge/config.toml"
DEFAULT_OUTPUT_DIR = "/var/lib/fastsam-edge/results"
DEMO = "demo"


class ConfigError(FastSAMEdgeError):
    """The configuration file is unreadable, has unknown keys or bad values."""


Check = Callable[[str, Any], Any]


def _spec(default: Any, doc: str, check: Check | None = None, example: Any = None) -> Any:
    """A schema field: default, documentation, validator, and an example for optional keys."""
    meta = {"doc": doc, "check": check, "example": example}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc, "section": True})


# ------------------------------------------------------------------------------------------
# validators: each returns the normalised value or raises ConfigError naming the key
# ------------------------------------------------------------------------------------------


def _bad(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {value!r}")


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, "true or false", value)
    return value


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(key: str, value: Any) -> int:
        rng = _range_text(lo, hi)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(key, f"an integer{rng}", value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _bad(key, f"an integer{rng}", value)
        return int(value)

    return check


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Check:
    def check(key: str, value: Any) -> float:
        rng = _range_text(lo, hi, lo_open)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(key, f"a number{rng}", value)
        v = float(value)
        if not math.isfinite(v):
            raise _bad(key, f"a finite number{rng}", value)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise _bad(key, f"a number{rng}", value)
        if hi is not None and v > hi:
            raise _bad(key, f"a number{rng}", value)
        return v

    return check


def _range_text(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(key, "a string", value)
    if "\0" in value:
        raise ConfigError(f"{key}: a NUL character is not allowed, got {value!r}")
    return value


def control_characters(value: str) -> list[str]:
    """The control characters (newline, NUL, escape, DEL, C1...) in ``value``, escaped."""
    return sorted({repr(c)[1:-1] for c in value if unicodedata.category(c) == "Cc"})


def path(key: str, value: Any) -> str:
    """A file or directory name: a string without control characters (a newline in a path
    would end the line of the systemd unit that names it)."""
    if not isinstance(value, str):
        raise _bad(key, "a string (a path)", value)
    bad = control_characters(value)
    if bad:
        raise ConfigError(
            f"{key}: control characters ({', '.join(bad)}) are not allowed in a path, got "
            f"{value!r}"
        )
    return value


TOKEN_MIN_CHARS = 16
TOKEN_HINT = (
    "make one with: openssl rand -hex 16 | sudo tee /etc/fastsam-edge/token, then set "
    'http.token_file = "/etc/fastsam-edge/token"'
)


def check_token(key: str, value: str) -> str:
    """An HTTP token: "" (none), or at least :data:`TOKEN_MIN_CHARS` characters without
    whitespace or control characters (non-ASCII ones work: clients send them as UTF-8). The
    token itself never appears in the message.

    Raises:
        ConfigError: Naming ``key``, the token's length, and how to make a good one.
    """
    if not value:
        return value
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise ConfigError(
            f"{key}: the token contains whitespace or control characters, which an "
            f"Authorization header cannot carry; {TOKEN_HINT}"
        )
    if len(value) < TOKEN_MIN_CHARS:
        raise ConfigError(
            f"{key}: the token has {len(value)} characters, at least {TOKEN_MIN_CHARS} are "
            f"needed (a short one is guessed); {TOKEN_HINT}"
        )
    return value


def token(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string (the token)")
    return check_token(key, value)


def choice(*options: Any) -> Check:
    def check(key: str, value: Any) -> Any:
        if isinstance(value, bool) or value not in options:
            raise _bad(key, "one of " + ", ".join(json.dumps(o) for o in options), value)
        return value

    return check


def roi(key: str, value: Any) -> list[int]:
    expected = "[] (whole frame) or [x, y, width, height] in pixels with width, height > 0"
    if not isinstance(value, list):
        raise _bad(key, expected, value)
    if not value:
        return []
    if len(value) != 4 or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise _bad(key, expected, value)
    x, y, w, h = value
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise _bad(key, expected, value)
    return [int(v) for v in value]


def scalar_table(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(key, "a table such as { FrameRate = 5 }", value)
    for k, v in value.items():
        ok = isinstance(v, bool | int | float | str) or (
            isinstance(v, list) and all(isinstance(x, bool | int | float) for x in v)
        )
        if not ok:
            raise _bad(f"{key}.{k}", "a number, boolean, string or list of numbers", v)
    return dict(value)


def host(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise _bad(key, "a host name or IP address", value)
    return value


def host_list(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v and not any(c.isspace() or c in "/@" for c in v) for v in value
    ):
        raise _bad(key, 'a list of host names or addresses, e.g. ["camera.lan"] (or ["*"])', value)
    return list(value)


def topic(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "#+\0"):
        raise _bad(key, "a non-empty MQTT topic without wildcards (#, +)", value)
    return value.rstrip("/")


MAX_VOCABULARY_WORDS = 100
"""Most words a vocabulary may hold (each costs a text-tower call once, and a column of the
per-frame scoring)."""
MAX_WORD_CHARS = 100
"""Longest word or phrase (the text tower reads at most 77 tokens)."""


def _word_key(word: str) -> str:
    """What makes two words the same to the text tower (it lowercases and collapses spaces)."""
    return " ".join(word.casefold().split())


def vocabulary(key: str, value: Any) -> list[str]:
    """An open vocabulary: a list of at most :data:`MAX_VOCABULARY_WORDS` distinct words or
    phrases, each stripped, non-empty, at most :data:`MAX_WORD_CHARS` characters, without
    control characters. ``[]`` = the default (the bundle's). The one validator of the config
    key ``processing.vocabulary`` and of ``POST /vocabulary``.

    Raises:
        ConfigError: Naming ``key`` (and the entry's index): not a list, too many words, a
            blank, overlong or control-character word, or a word given twice (case and
            spacing do not make words different: the text tower lowercases).
    """
    if not isinstance(value, list):
        raise _bad(key, 'a list of words or phrases, e.g. ["person", "red car"]', value)
    if len(value) > MAX_VOCABULARY_WORDS:
        raise ConfigError(f"{key}: {len(value)} words, at most {MAX_VOCABULARY_WORDS} are allowed")
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, word in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(word, str) or not word.strip():
            raise _bad(where, "a non-empty word or phrase", word)
        word = word.strip()
        bad = control_characters(word)
        if bad:
            raise ConfigError(f"{where}: control characters ({', '.join(bad)}) in {word!r}")
        if len(word) > MAX_WORD_CHARS:
            raise ConfigError(
                f"{where}: {len(word)} characters, at most {MAX_WORD_CHARS} are allowed"
            )
        first = seen.setdefault(_word_key(word), i)
        if first != i:
            raise ConfigError(
                f"{where}: {word!r} repeats {key}[{first}] {out[first]!r} (the text tower "
                "ignores case and spacing); give each word once"
            )
        out.append(word)
    return out


def log_level(key: str, value: Any) -> str:
    levels = ("debug", "info", "warning", "error")
    if not isinstance(value, str) or value.lower() not in levels:
        raise _bad(key, "one of " + ", ".join(levels), value)
    return value.lower()


# ------------------------------------------------------------------------------------------
# the schema
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    bundle: str = _spec(
        DEMO,
        'Model bundle directory (written by fastsam-export), or an embedded demo bundle: "demo" '
        '(FastSAM) or "demo-yoloe" (open vocabulary); both only segment the synthetic demo '
        "scenes: export FastSAM-s or a YOLOE for real images.",
        path,
    )
    precision: str = _spec(
        "",
        'Detector precision: "fp32", "int8", or "" for the bundle\'s default.',
        choice("", "fp32", "int8"),
    )
    threads: int = _spec(
        0, "onnxruntime intra-op threads; 0 = OMP_NUM_THREADS or all cores.", integer(0, 64)
    )
    conf: float | None = _spec(
        None, "Score threshold in [0, 1]; unset = the bundle's (0.4).", number(0, 1), 0.4
    )
    iou: float | None = _spec(
        None, "NMS IoU threshold in [0, 1]; unset = the bundle's (0.9).", number(0, 1), 0.9
    )
    warmup: bool = _spec(
        True, "Run one inference on a blank frame at start, before READY.", boolean
    )
    defaults_from: str = _spec(
        "",
        "A `fastsam-edge bench` result (bench.json) run on this board: its recommendation "
        'fills precision and threads where they are left at "" / 0 (a different recommended '
        'bundle is only logged). "" = off.',
        path,
        "/var/lib/fastsam-edge/bench/bench.json",
    )


@dataclass(frozen=True)
class SourceConfig:
    kind: str = _spec(
        "picamera2",
        'Frame source: "picamera2" (Pi camera, apt python3-picamera2), "opencv" (USB/V4L2 '
        'camera), "stream" (a network camera: source.url), "replay" (a folder of images or a '
        'video file) or "demo" (generated demo scenes).',
        choice("picamera2", "opencv", "stream", "replay", "demo"),
    )
    width: int = _spec(
        1280, "Capture width in pixels (picamera2, opencv; demo: scene width).", integer(16, 16384)
    )
    height: int = _spec(
        960,
        "Capture height in pixels (picamera2, opencv; demo: scene height).",
        integer(16, 16384),
    )
    fps: float = _spec(
        5.0,
        "Highest rate at which frames are read while the motion trigger is on (the other "
        "triggers read a frame only when they fire).",
        number(0, 120, lo_open=True),
    )
    hflip: bool = _spec(False, "Mirror frames left-right.", boolean)
    vflip: bool = _spec(False, "Flip frames upside down.", boolean)
    rotation: int = _spec(
        0,
        "Rotate frames clockwise by 0, 90, 180 or 270 degrees (after the flips).",
        choice(0, 90, 180, 270),
    )
    read_timeout_s: float = _spec(
        5.0,
        "A frame read that takes longer fails (and the source is reopened).",
        number(0.1, 600),
    )
    reopen_backoff_s: float = _spec(
        1.0,
        "First wait before reopening a failed source; doubles on every failure.",
        number(0, 3600),
    )
    reopen_backoff_max_s: float = _spec(
        60.0, "Longest wait between two attempts to reopen a failed source.", number(0, 86400)
    )
    device: str = _spec(
        "0",
        'opencv: camera index ("0") or device path; prefer the stable '
        '"/dev/v4l/by-id/usb-...-video-index0".',
        path,
    )
    fourcc: str = _spec(
        "MJPG",
        'opencv: pixel format to request ("MJPG" for 720p+ over USB 2; "" = driver\'s).',
        string,
    )
    discard_frames: int = _spec(
        5, "opencv: frames discarded after opening (exposure settling).", integer(0, 100)
    )
    camera: int = _spec(0, "picamera2: camera number (Picamera2(camera)).", integer(0, 16))
    settle_s: float = _spec(
        1.0,
        "picamera2: wait after start() for auto exposure / white balance to settle.",
        number(0, 60),
    )
    controls: dict[str, Any] = _spec(
        {}, "picamera2: libcamera controls, e.g. { AfMode = 2, FrameRate = 5 }.", scalar_table
    )
    url: str = _spec(
        "",
        "stream: what OpenCV's FFmpeg backend opens: rtsp://camera.lan:554/stream1, "
        "http://camera.lan/mjpeg (MJPEG over HTTP), an HTTP(S) video file or HLS playlist. "
        "Read on its own thread, only the newest frame kept; reopened with the backoff above "
        "when it drops. Put the user name and password in source.credentials_file, not here "
        "(logs and /healthz show the URL without them).",
        path,
    )
    credentials_file: str = _spec(
        "",
        'stream: a file holding "user:password" for source.url (mode 0640, '
        'root:fastsam-edge); "" = none.',
        path,
    )
    path: str = _spec("", "replay: folder of images (sorted by name) or a video file.", path)
    max_pixels: int = _spec(
        50_000_000,
        "replay: refuse images (and videos) with more pixels than this, read from the file "
        "header before decoding; such files are skipped and counted.",
        integer(1, 1 << 30),
    )
    loop: bool = _spec(
        False, "replay, demo: start again at the end instead of stopping the service.", boolean
    )
    realtime: bool = _spec(
        False,
        "replay, demo: treat frames as a live camera (drop frames while busy) instead of "
        "processing every frame.",
        boolean,
    )
    seed: int = _spec(
        1_000_000,
        "demo: seed of the first scene (>= 1000000: never used for training).",
        integer(0),
    )
    count: int = _spec(20, "demo: number of distinct scenes.", integer(1, 100_000))


@dataclass(frozen=True)
class ProcessingConfig:
    roi: list[int] = _spec(
        [],
        "Region of interest [x, y, width, height] in pixels of the oriented frame; [] = whole "
        "frame. Only this region is segmented and stored.",
        roi,
    )
    max_mask_side: int = _spec(
        1280,
        "Cap on the stored masks' resolution: frames (after the ROI) whose longer side exceeds "
        "this are downscaled before segmentation, so a 12 MP still yields masks of at most "
        "1280 px; 0 = no cap (the model sees at most its input size anyway).",
        integer(0, 16384),
    )
    min_mask_area: int = _spec(
        0, "Drop masks smaller than this many pixels (of the stored image).", integer(0)
    )
    max_masks: int = _spec(
        100,
        "Keep at most this many masks per frame (highest scores); 0 = the bundle's max_det.",
        integer(0, 10_000),
    )
    polygon_epsilon: float = _spec(
        1.0,
        "Polygon simplification in pixels for the JSON polygons (0 = exact).",
        number(0, 100),
    )
    text_prefilter: str = _spec(
        "auto",
        'Which masks CLIP encodes for a text prompt: "dense" ranks every mask by one CLIP pass '
        "over the frame and encodes the text_shortlist best (conv towers such as MobileCLIP); "
        '"score" the 32 best by detection score; "auto" = dense where the bundle has it.',
        choice(*TEXT_PREFILTERS),
    )
    track: bool = _spec(
        False,
        "Track objects across frames: every mask gets a track_id that stays with the object "
        "while it is visible (results, overlay colours, the page), and [events] fire when "
        "objects enter and leave. Tracks follow the segmented frames: use a trigger that "
        "segments often (e.g. trigger.interval.seconds = 0 at source.fps).",
        boolean,
    )
    vocabulary: list[str] = _spec(
        [],
        'The words an open-vocabulary (YOLOE) bundle finds, e.g. ["person", "dog", "red '
        "car\"]: every mask gets one of them as its label. [] = the bundle's default "
        "vocabulary. Changed at runtime (POST /vocabulary, the page), the vocabulary is kept "
        "in service.state_dir and wins over this key on restart until this key is edited. "
        f"At most {MAX_VOCABULARY_WORDS} words of at most {MAX_WORD_CHARS} characters; a "
        "FastSAM bundle (class-agnostic) refuses a non-empty vocabulary.",
        vocabulary,
    )
    text_shortlist: int = _spec(
        DENSE_SHORTLIST,
        "Crops CLIP encodes per text prompt with the dense prefilter: fewer is faster and more "
        "often picks another mask than CLIP over all masks would (docs/benchmarks.md).",
        integer(1, 1000),
    )


@dataclass(frozen=True)
class IntervalConfig:
    enabled: bool = _spec(False, "Segment a frame every `seconds`.", boolean)
    seconds: float = _spec(
        10.0, "Interval in seconds; 0 = every frame the source delivers.", number(0, 86400 * 7)
    )


@dataclass(frozen=True)
class MotionConfig:
    enabled: bool = _spec(
        False,
        "Segment when the picture changes (frame differencing on a low-res gray copy).",
        boolean,
    )
    width: int = _spec(
        160,
        "Width of the low-res copy used for differencing (height keeps the aspect).",
        integer(16, 1920),
    )
    threshold: int = _spec(
        25,
        "A pixel has changed when its gray level differs from the background by more.",
        integer(1, 254),
    )
    min_area: float = _spec(
        0.01,
        "Fraction of the low-res frame that must change to count as motion.",
        number(0, 1, lo_open=True),
    )
    frames: int = _spec(1, "Consecutive frames with motion needed to fire.", integer(1, 100))
    cooldown_s: float = _spec(
        10.0, "After firing, ignore motion for this many seconds.", number(0, 86400)
    )
    background_alpha: float = _spec(
        0.5,
        "How fast the background follows the picture (1 = previous frame only, smaller = "
        "slower, ignores short flicker).",
        number(0, 1, lo_open=True),
    )


@dataclass(frozen=True)
class GpioConfig:
    enabled: bool = _spec(
        False,
        "Segment on a GPIO edge (button, PIR sensor; gpiozero, apt python3-gpiozero).",
        boolean,
    )
    pin: int = _spec(17, "BCM pin number.", integer(0, 53))
    edge: str = _spec(
        "falling",
        'Edge that fires: "falling" (button to ground), "rising" or "both".',
        choice("falling", "rising", "both"),
    )
    pull_up: bool = _spec(True, "Enable the internal pull-up (false: pull-down).", boolean)
    bounce_s: float = _spec(0.05, "Debounce time in seconds.", number(0, 10))


@dataclass(frozen=True)
class TriggerConfig:
    queue_size: int = _spec(
        1,
        "Triggered frames waiting for the segmenter; when full, new ones are dropped and counted "
        "(live sources).",
        integer(1, 16),
    )
    interval: IntervalConfig = _section(IntervalConfig, "Interval timer.")
    motion: MotionConfig = _section(MotionConfig, "Motion (frame differencing, int16).")
    gpio: GpioConfig = _section(GpioConfig, "GPIO edge.")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = _spec(
        DEFAULT_OUTPUT_DIR,
        "Output directory; each result is a directory <UTC time>_<frame id>/ with result.json "
        "(the `fastsam-edge segment` schema), overlay.jpg and optionally frame.jpg, renamed "
        "into place when complete.",
        path,
    )
    overlay: bool = _spec(True, "Write overlay.jpg (masks painted over the frame).", boolean)
    overlay_format: str = _spec(
        "jpeg",
        'Format of the overlay: "jpeg" (overlay.jpg, small and fast to encode) or "png" '
        "(overlay.png, lossless, several times slower and larger).",
        choice("jpeg", "png"),
    )
    frame: bool = _spec(False, "Write the (oriented, cropped, capped) source frame.", boolean)
    frame_format: str = _spec(
        "jpg", 'Format of the source frame: "jpg" or "png".', choice("jpg", "png")
    )
    jpeg_quality: int = _spec(90, "JPEG quality of overlay.jpg and frame.jpg.", integer(1, 100))
    max_results: int = _spec(
        1000,
        "Retention: keep at most this many results (oldest deleted first); 0 = no limit.",
        integer(0),
    )
    max_mb: float = _spec(
        1024.0, "Retention: keep at most this many MiB of results; 0 = no limit.", number(0)
    )
    max_age_days: float = _spec(
        30.0, "Retention: delete results older than this many days; 0 = no limit.", number(0)
    )
    save: str = _spec(
        "all",
        'Which segmented frames are written: "all", or "events" (only frames on which an '
        "object entered or left; needs processing.track). An HTTP request's own save flag "
        "always wins.",
        choice("all", "events"),
    )
    min_free_mb: float = _spec(
        200.0,
        "Do not write results while the file system has less free space than this (MiB); the "
        "frame is still segmented and published.",
        number(0),
    )


@dataclass(frozen=True)
class EventsConfig:
    enabled: bool = _spec(
        True,
        "With processing.track: publish enter/leave events (MQTT <prefix>/events, the Home "
        "Assistant event entity) and list them on the page.",
        boolean,
    )
    min_frames: int = _spec(
        3,
        "An object seen on this many segmented frames in a row gets its track id and an "
        "'enter' event (fewer: flicker spends ids).",
        integer(1, 1000),
    )
    max_missed: int = _spec(
        5,
        "An object not seen for more segmented frames than this has left ('leave' event); "
        "seen again sooner, it keeps its id (occlusion, a missed detection).",
        integer(0, 10_000),
    )
    recent: int = _spec(
        20, "Events the page lists (newest first), each with a thumbnail.", integer(1, 1000)
    )


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = _spec(
        True, "Serve POST /trigger, GET /healthz, /metrics and /latest.", boolean
    )
    host: str = _spec(
        "127.0.0.1",
        'Address to bind; "0.0.0.0" exposes the API to the network (set a token).',
        host,
    )
    port: int = _spec(8080, "TCP port; 0 = any free port (logged).", integer(0, 65535))
    unix_socket: str = _spec(
        "",
        'Also serve the API on this Unix socket, e.g. "/run/fastsam-edge/api.sock" ("" = off).',
        path,
    )
    token: str = _spec(
        "",
        "If set, requests other than GET /healthz need 'Authorization: Bearer <token>' (or the "
        "page's login). At least 16 characters; make one with `openssl rand -hex 16` (prefer "
        "http.token_file).",
        token,
    )
    token_file: str = _spec(
        "", "Read the token from this file instead (mode 0640, root:fastsam-edge).", path
    )
    allow_unauthenticated: bool = _spec(
        False,
        "Serve a non-loopback http.host without a token. Without it such a configuration "
        "does not start: anyone who reaches the port could trigger, watch the live camera and "
        "read every stored result.",
        boolean,
    )
    max_body_bytes: int = _spec(
        65536, "Largest accepted request body; larger ones get 413.", integer(64, 64 << 20)
    )
    request_timeout_s: float = _spec(
        300.0,
        "How long POST /trigger waits for its frame to be captured and segmented (a text "
        "prompt on a Pi 4 can take tens of seconds); then 504.",
        number(1, 3600),
    )
    max_connections: int = _spec(
        32,
        "Connections served at once (one thread each); more get a fast 503 with Retry-After.",
        integer(1, 1024),
    )
    allowed_hosts: list[str] = _spec(
        [],
        "Extra names accepted in the Host header (421 otherwise: stops DNS rebinding). Always "
        "accepted: localhost, 127.0.0.1, [::1] and the address a client connected to; with a "
        "non-loopback http.host also this machine's host name and <hostname>.local. Add the "
        'names you reach the device by (reverse proxy, DNS alias); ["*"] accepts any Host.',
        host_list,
    )
    prompt_cache_frames: int = _spec(
        4,
        "Frames whose detections are kept for POST /prompt (prompts without running the "
        "detector again; the page's clicks); prompted frames and the one a page shows are "
        "evicted last. 0 = off.",
        integer(0, 64),
    )
    prompt_cache_mb: float = _spec(
        64.0,
        "Memory bound of those frames (image, prototypes, assembled masks, CLIP crop "
        "embeddings) in MiB; oldest evicted first (fastsam_prompt_cache_bytes).",
        number(1, 4096),
    )
    live_fps: float = _spec(
        2.0,
        "While a page (GET /) is open, read frames of a live source at this rate for its live "
        "view, whatever the triggers (nothing extra is read without a viewer).",
        number(1, 30),
    )


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = _spec(
        False, "Publish results to an MQTT broker (paho-mqtt; pip install paho-mqtt).", boolean
    )
    host: str = _spec("localhost", "Broker host.", host)
    port: int = _spec(1883, "Broker port (8883 for TLS).", integer(1, 65535))
    client_id: str = _spec("fastsam-edge", "MQTT client id (unique per broker).", string)
    username: str = _spec("", 'User name; "" = anonymous.', string)
    password_file: str = _spec(
        "", "File holding the password (keep secrets out of this file).", path
    )
    tls: bool = _spec(False, "Connect with TLS.", boolean)
    ca_file: str = _spec("", 'CA certificate for TLS; "" = the system\'s.', path)
    topic_prefix: str = _spec(
        "fastsam-edge",
        "Topics: <prefix>/available (online/offline, retained, last will), <prefix>/events "
        "(one compact JSON per result), <prefix>/state (the last one, retained), "
        "<prefix>/overlay (JPEG, retained), <prefix>/trigger (subscribed: a message captures).",
        topic,
    )
    qos: int = _spec(1, "QoS of published messages.", choice(0, 1, 2))
    keepalive_s: int = _spec(
        60,
        "Keep-alive interval in seconds; a broker that has not answered for half of it is "
        "logged as a warning and reported by /healthz (the client pings every half of it, so "
        "a connected broker that stops answering is reported within it).",
        integer(5, 3600),
    )
    protocol: str = _spec(
        "5",
        'MQTT version: "5" (bounds incoming packets with mqtt.max_packet_bytes) or "3.1.1" '
        "(for old brokers; then only the broker's message_size_limit bounds them).",
        choice("5", "3.1.1"),
    )
    max_packet_bytes: int = _spec(
        65536,
        "Largest packet the broker may send this client (MQTT 5 Maximum Packet Size): a larger "
        "message to the trigger topic is dropped by the broker, never read.",
        integer(256, 268435455),
    )
    max_masks: int = _spec(
        10, "Masks listed (score, box, area) in each event message.", integer(0, 1000)
    )
    image: bool = _spec(
        True,
        "Publish each result's overlay as JPEG to <prefix>/overlay (retained; the Home "
        "Assistant 'Last result' camera).",
        boolean,
    )
    image_max_side: int = _spec(
        640, "Longer side of the published overlay JPEG in pixels (downscaled).", integer(32, 8192)
    )
    discovery: bool = _spec(
        False,
        "Publish Home Assistant MQTT discovery: one device with a mask-count sensor, a 'Last "
        "result' camera and a 'Capture' button (it publishes to <prefix>/trigger, which the "
        "service subscribes to); with a YOLOE bundle also one count sensor per vocabulary "
        "word, added and removed as the vocabulary changes.",
        boolean,
    )
    discovery_prefix: str = _spec("homeassistant", "Home Assistant discovery prefix.", topic)


@dataclass(frozen=True)
class RuntimeConfig:
    stall_timeout_s: float = _spec(
        120.0,
        "A segmentation running longer than this counts as hung: watchdog pings stop (systemd "
        "restarts the service after WatchdogSec) and /healthz answers 503. Keep it above the "
        "worst case (a text prompt on a Pi 4).",
        number(1, 86400),
    )
    status_interval_s: float = _spec(
        60.0,
        "Log a one-line status (and update systemd STATUS=) this often; 0 = never.",
        number(0),
    )
    pipeline: str = _spec(
        "staged",
        'How a triggered frame is handled: "staged" (the output (encode, draw, write, publish, '
        "answer) runs in its own thread behind a queue of 2 results, so a frame's output "
        'overlaps the next frame\'s segmentation; results stay in frame order) or "serial" (one '
        "worker segments a frame, then does its output). docs/benchmarks.md compares the two.",
        choice("serial", "staged"),
    )
    log_level: str = _spec("info", 'Log level: "debug", "info", "warning" or "error".', log_level)
    state_dir: str = _spec(
        "",
        "Where the service keeps what it learns while running (the vocabulary set at runtime, "
        "the Home Assistant entities it announced, word embeddings of an open-vocabulary "
        'bundle). "" = $STATE_DIRECTORY (systemd\'s StateDirectory, /var/lib/fastsam-edge) '
        "or else <output.dir>/.state.",
        path,
    )


@dataclass(frozen=True)
class ServiceConfig:
    """The whole configuration (one field per TOML table)."""

    model: ModelConfig = _section(ModelConfig, "The segmentation model.")
    source: SourceConfig = _section(SourceConfig, "Where frames come from.")
    processing: ProcessingConfig = _section(ProcessingConfig, "What is segmented and kept.")
    trigger: TriggerConfig = _section(
        TriggerConfig,
        "When a frame is segmented. Triggers combine; POST /trigger (HTTP) always works while "
        "[http] is enabled.",
    )
    output: OutputConfig = _section(OutputConfig, "Result files and retention.")
    events: EventsConfig = _section(
        EventsConfig, "Objects entering and leaving (with processing.track = true)."
    )
    http: HttpConfig = _section(HttpConfig, "Local HTTP API.")
    mqtt: MqttConfig = _section(MqttConfig, "MQTT publishing (Home Assistant, Frigate style).")
    service: RuntimeConfig = _section(RuntimeConfig, "Service behaviour.")

    def replace(self, **changes: Any) -> ServiceConfig:
        """A copy with dotted keys changed, e.g. ``replace(**{"output.dir": "/tmp/x"})``."""
        return parse_config(_merge(to_dict(self), _undot(changes)), origin="<override>")

    @property
    def any_trigger(self) -> bool:
        """Whether a trigger other than HTTP is enabled."""
        t = self.trigger
        return t.interval.enabled or t.motion.enabled or t.gpio.enabled


# ------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(cls))


def _parse_section(cls: type, data: dict[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in _fields(cls)}
    for key in data:
        if key not in known:
            path = f"{prefix}{key}"
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            where = prefix.rstrip(".") or "top level"
            raise ConfigError(
                f"{path}: unknown key{hint}; known keys in [{where}]: {', '.join(known)}"
            )
    values: dict[str, Any] = {}
    for name, f in known.items():
        path = f"{prefix}{name}"
        if f.metadata.get("section"):
            sub = data.get(name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{path}: expected a table [{path}], got {sub!r}")
            values[name] = _parse_section(f.default_factory, sub, f"{path}.")  # type: ignore[arg-type]
        elif name in data:
            values[name] = f.metadata["check"](path, data[name])
    return cls(**values)


def parse_config(data: dict[str, Any], origin: str = "<config>") -> ServiceConfig:
    """Validate a configuration dictionary (as read from TOML).

    Args:
        data: Nested tables; missing keys take their defaults.
        origin: File name used in error messages.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: Unknown key or bad value (the message names the dotted key).
    """
    try:
        cfg = _parse_section(ServiceConfig, data, "")
        _cross_checks(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    return cfg


def _cross_checks(cfg: ServiceConfig) -> None:
    if cfg.source.kind == "replay" and not cfg.source.path:
        raise ConfigError('source.path: required when source.kind = "replay"')
    if cfg.source.kind == "stream":
        check_stream_url("source.url", cfg.source.url)
    if cfg.output.save == "events" and not cfg.processing.track:
        raise ConfigError(
            'output.save: "events" needs processing.track = true (events come from tracks)'
        )
    if cfg.source.reopen_backoff_max_s < cfg.source.reopen_backoff_s:
        raise ConfigError(
            f"source.reopen_backoff_max_s: must be >= source.reopen_backoff_s "
            f"({cfg.source.reopen_backoff_s}), got {cfg.source.reopen_backoff_max_s}"
        )
    if cfg.http.token and cfg.http.token_file:
        raise ConfigError("http.token, http.token_file: set at most one of them")
    if cfg.output.dir == "":
        raise ConfigError("output.dir: must not be empty")


def check_stream_url(key: str, url: str) -> str:
    """A stream URL: ``scheme://...`` without whitespace (the scheme is FFmpeg's business).

    Raises:
        ConfigError: Naming ``key``; the message shows the URL without its credentials.
    """
    from urllib.parse import urlsplit

    if not url:
        raise ConfigError(f'{key}: required when source.kind = "stream"')
    scheme = urlsplit(url).scheme
    if "://" not in url or not scheme or any(c.isspace() for c in url):
        raise ConfigError(
            f"{key}: expected a URL such as rtsp://camera.lan:554/stream1 or "
            f"http://camera.lan/mjpeg, got {redact_url(url)!r}"
        )
    return url


def redact_url(url: str) -> str:
    """``url`` safe to log: no user name, password or query string (tokens hide there)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    if parts.username is not None or parts.password is not None:
        netloc = "***@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def read_secret_file(key: str, path: str | Path) -> str:
    """The stripped text of a secret file named by the configuration (a token, a password).

    Raises:
        ConfigError: Naming ``key``: not a regular file, or unreadable.
    """
    check_config_file(key, path)
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {str(path)!r}: {exc.strerror}") from None


def check_config_file(key: str, path: str | Path) -> None:
    """A file named by the configuration must be a regular file (a FIFO would block the read).

    A missing file is left to the caller's own message.

    Raises:
        ConfigError: ``key: 'path' is a directory`` (a FIFO, a symlink loop, a device...).
    """
    kind = describe_path_kind(Path(path))
    if kind is not None and kind != "does not exist":
        raise ConfigError(f"{key}: {str(path)!r} {kind}")


def load_config(path: str | Path) -> ServiceConfig:
    """Read and validate a TOML configuration file.

    Raises:
        ConfigError: Missing or unreadable file, TOML syntax error, unknown key or bad value.
    """
    path = Path(path)
    check_config_file("--config", path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (write one with `fastsam-edge serve --print-config`)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: TOML nested too deeply") from None
    return parse_config(data, origin=str(path))


def bench_defaults(model: ModelConfig) -> tuple[str, int, list[str]]:
    """Precision and threads after ``model.defaults_from`` (a bench.json recommendation).

    Explicit settings win: only ``precision = ""`` and ``threads = 0`` are filled.

    Returns:
        ``(precision, threads, notes)``; notes say what was taken, or that the recommended
        bundle differs from the configured one.

    Raises:
        ConfigError: The file is missing, not JSON, or has no recommendation.
    """
    if not model.defaults_from:
        return model.precision, model.threads, []
    key = "model.defaults_from"
    check_config_file(key, model.defaults_from)
    try:
        doc = json.loads(Path(model.defaults_from).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{key}: no such file: {model.defaults_from!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {model.defaults_from!r}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{key}: {model.defaults_from!r}: JSON nested too deeply") from None
    rec = doc.get("recommendation") if isinstance(doc, dict) else None
    if not isinstance(rec, dict) or rec.get("precision") not in ("fp32", "int8"):
        raise ConfigError(f"{key}: {model.defaults_from!r} has no bench recommendation")
    threads = rec.get("threads")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"{key}: bad recommended threads {threads!r}")
    precision = model.precision or rec["precision"]
    threads = model.threads or threads
    notes = [f"{key}: precision {precision}, threads {threads} (bench recommendation)"]
    rec_bundle = str(rec.get("bundle", ""))
    if (
        rec_bundle
        and Path(rec_bundle).name != Path(model.bundle).name
        and not is_demo_name(model.bundle)
    ):
        notes.append(
            f"{key}: the bench recommends bundle {rec_bundle!r} (input "
            f"{rec.get('input')}), the configuration uses {model.bundle!r}"
        )
    return precision, threads, notes


def demo_config(out_dir: str | Path, **changes: Any) -> ServiceConfig:
    """The no-config-file demo: demo scenes, demo bundle, a segmentation per frame.

    Args:
        out_dir: Output directory.
        changes: Further dotted-key overrides.
    """
    base: dict[str, Any] = {
        "model.bundle": DEMO,
        "source.kind": "demo",
        "source.width": 640,
        "source.height": 480,
        "trigger.interval.enabled": True,
        "trigger.interval.seconds": 0.0,
        "output.dir": str(out_dir),
        "http.enabled": False,
        "service.status_interval_s": 0.0,
    }
    base.update(changes)
    return ServiceConfig().replace(**base)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The configuration as nested dictionaries (``None`` values left out, as in TOML)."""
    out: dict[str, Any] = {}
    for f in _fields(type(cfg)):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif value is not None:
            out[f.name] = value
    return out


def _undot(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------------------------------
# the example file
# ------------------------------------------------------------------------------------------


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(value: str) -> str:
    """A TOML basic string of raw UTF-8: only quotes, backslashes and control characters are
    escaped, so a character above U+FFFF stays one character (``json.dumps`` would write a
    surrogate pair, which TOML rejects).

    Raises:
        ValueError: ``value`` holds a lone surrogate (e.g. undecodable bytes of a command-line
            argument), which no UTF-8 file can hold.
    """
    out = ['"']
    for c in value:
        o = ord(c)
        if c in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[c])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        elif 0xD800 <= o <= 0xDFFF:
            raise ValueError(f"{value!r} is not valid Unicode (a lone surrogate)")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    """A TOML literal for a bool, number, string, list or flat table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML literal for {value!r}")


def _wrap(text: str, width: int = 95) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return lines


def _render_section(cls: type, path: str, doc: str, out: list[str]) -> None:
    out.append("")
    out.extend(f"# {line}" for line in _wrap(doc))
    out.append(f"[{path}]")
    subsections = []
    default = cls()
    for f in _fields(cls):
        if f.metadata.get("section"):
            subsections.append(f)
            continue
        out.extend(f"# {line}" for line in _wrap(f.metadata["doc"]))
        value = getattr(default, f.name)
        if value is None:
            out.append(f"# {f.name} = {toml_value(f.metadata['example'])}")
        else:
            out.append(f"{f.name} = {toml_value(value)}")
    for f in subsections:
        _render_section(f.default_factory, f"{path}.{f.name}", f.metadata["doc"], out)  # type: ignore[arg-type]


def render_example_config() -> str:
    """The example configuration: every key, documented, at its default value."""
    out = [
        "# fastsam-edge service configuration (TOML).",
        "#",
        "# Every key is shown with its default value; delete the ones you do not change.",
        "# Keys shown commented out have no fixed default (the model bundle supplies it).",
        "# Unknown keys and bad values stop the service with an error naming the key.",
        "# Check a file with: fastsam-edge doctor --config /etc/fastsam-edge/config.toml",
        "# Generated by `fastsam-edge serve --print-config`.",
    ]
    for f in _fields(ServiceConfig):
        _render_section(f.default_factory, f.name, f.metadata["doc"], out)  # type: ignore[arg-type]
    return "\n".join(out) + "\n"


def resolve_state_dir(cfg: ServiceConfig) -> Path:
    """The service's state directory: ``service.state_dir``, else systemd's
    ``$STATE_DIRECTORY`` (its first entry), else ``<output.dir>/.state`` (the results'
    retention only touches result directories)."""
    if cfg.service.state_dir:
        return Path(cfg.service.state_dir)
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    return Path(cfg.output.dir) / ".state"


def resolve_token(cfg: HttpConfig) -> str:
    """The HTTP token from ``http.token`` or ``http.token_file`` ("" when none).

    Raises:
        ConfigError: The token file cannot be read or is empty.
    """
    if not cfg.token_file:
        return cfg.token
    secret = read_secret_file("http.token_file", cfg.token_file)
    if not secret:
        raise ConfigError(f"http.token_file: {cfg.token_file!r} is empty; {TOKEN_HINT}")
    return check_token(f"http.token_file ({cfg.token_file})", secret)


def is_loopback_host(host: str) -> bool:
    """Whether ``http.host`` binds only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(cfg: HttpConfig, secret: str) -> str | None:
    """Why this HTTP configuration must not start (a non-loopback ``http.host`` without a
    token and without ``http.allow_unauthenticated``), or None."""
    if not cfg.enabled or is_loopback_host(cfg.host) or secret or cfg.allow_unauthenticated:
        return None
    return (
        f"http.host: {cfg.host!r} is reachable from the network but no token is set "
        "(http.token_file): anyone could trigger, watch the live camera and read every "
        f"result; {TOKEN_HINT} (or set http.allow_unauthenticated = true, or "
        'http.host = "127.0.0.1")'
    )


def check_exposure(cfg: HttpConfig, secret: str) -> None:
    """Refuse what :func:`exposure_problem` describes.

    Raises:
        ConfigError: Naming ``http.host`` and ``http.token_file``.
    """
    problem = exposure_problem(cfg, secret)
    if problem:
        raise ConfigError(problem)
