"""The local HTTP API (stdlib ``http.server``), over TCP and/or a Unix socket.

Endpoints:

* ``POST /trigger``: capture a frame now, segment it, return the result JSON (the
  ``fastsam-edge segment`` schema plus ``files`` / ``result_dir``). Optional JSON body
  (``Content-Type: application/json``)::

      {"prompt": [{"type": "point", "data": [x, y], "label": 1},
                  {"type": "box", "data": [x1, y1, x2, y2]},
                  {"type": "text", "data": "a red circle"}],
       "conf": 0.4, "iou": 0.9, "save": true, "masks": true}

  Prompt coordinates are pixels of the stored image (the result's ``image`` size: the frame
  after orientation, ROI and the resolution cap). ``save`` = false skips the result files;
  ``masks`` = false answers with the compact summary instead of the full result.
  While another request is being processed the answer is **503** (``Retry-After``), not a
  queue. A request that times out (504) is cancelled: its frame is not segmented later.
* ``GET /healthz``: JSON health (200 healthy, 503 degraded / stalled / source down); no token.
* ``GET /metrics``: Prometheus text.
* ``GET /latest``: the last result JSON (404 before the first).

Every route gets the same protections, applied by :meth:`_Handler._dispatch` before the
route's function runs, so a route added to :func:`default_routes` has them for free:

1. ``Host`` must name this device (``http.allowed_hosts``; 421 otherwise): a web page cannot
   reach the API through DNS rebinding. Unix-socket requests skip this (browsers cannot).
2. Unknown path 404, wrong method 405.
3. The bearer token (401) unless the route is public; ``100 Continue`` is sent only after
   this and the body checks pass. Wrong credentials (a wrong ``Authorization`` header here, a
   wrong ``POST /login`` token on the page) go through one :class:`AuthThrottle`: after
   :data:`AUTH_FREE_FAILURES` from one client address (or :data:`AUTH_FREE_FAILURES_ALL` from
   all together) a credential is answered 429 with ``Retry-After``, unchecked, until a
   back-off ends that doubles with each further failure. Nothing sleeps in a connection slot,
   and the failures are logged as one WARNING a minute with their count.
4. Body framing: no ``Transfer-Encoding`` (411), exactly one decimal ``Content-Length`` (400),
   at most ``http.max_body_bytes`` (413); a POST must be ``application/json`` (415, empty
   bodies too: a cross-site form or ``fetch`` cannot send that without a CORS preflight,
   which this server never grants). The body must arrive within a few seconds (400).
5. Any error answer closes the connection; unread request bytes are drained before the close
   (a lingering close), so they are never parsed as a next request and the client sees the
   answer instead of a reset.

Connections are served by at most ``http.max_connections`` threads; when all are taken a new
connection gets an immediate 503 with ``Retry-After`` instead of waiting in the listen backlog.
A route marked ``counted=False`` (a long-lived stream) gives its slot back once routed.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import math
import os
import selectors
import socket
import socketserver
import stat
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol

from edge.prompts import Prompt, parse_prompts
from edge.service.config import ConfigError, is_loopback_host

_LOGGER = logging.getLogger(__name__)

TRIGGER_FIELDS = ("prompt", "conf", "iou", "save", "masks")

BACKLOG = 512
"""Listen backlog (was 5): a burst of a few hundred connections waits in the kernel for the
accept loop instead of being dropped (SYN retries cost a client 1 s, 3 s, 7 s...). Linux caps
it at ``net.core.somaxconn`` (4096 on current kernels)."""

BODY_TIMEOUT_S = 2.0
"""A declared body must arrive within this (plus 1 s per 32 KiB); else 400, not a 15 s hang."""

MAX_JSON_DEPTH = 32
"""Deepest accepted JSON nesting (prompts need 3)."""

MAX_NUMBER_DIGITS = 64
"""Longest accepted JSON number literal."""

LINGER_S = 2.0
"""How long a closed connection's unread request bytes are drained (lingering close)."""

REFUSED_LOG_INTERVAL_S = 60.0
"""Connections refused for want of a slot are logged at most this often (with a count)."""

LINGER_MAX_SOCKETS = 512
LINGER_MAX_BYTES = 1 << 20

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

AUTH_FREE_FAILURES = 5
"""Wrong credentials one client address may send before it is throttled."""
AUTH_FREE_FAILURES_ALL = 30
"""Wrong credentials all addresses together may send within :data:`AUTH_WINDOW_S` before every
credential is throttled (a guesser with many addresses)."""
AUTH_WINDOW_S = 60.0
AUTH_BACKOFF_S = 1.0
"""The first back-off; it doubles with each further failure, up to :data:`AUTH_BACKOFF_MAX_S`."""
AUTH_BACKOFF_MAX_S = 60.0
AUTH_FORGET_S = 600.0
"""Failures this much older than the last one are forgotten."""
AUTH_MAX_CLIENTS = 4096
"""Client addresses remembered by the throttle (oldest forgotten first)."""
AUTH_CLIENT_BYTES = 256
"""Memory of one remembered address (its key and record), for the cache metrics."""
AUTH_LOG_INTERVAL_S = 60.0

_BUSY_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)


def _busy_response(limit: int) -> bytes:
    body = (
        json.dumps(
            {"error": f"busy: all {limit} connections (http.max_connections) are in use; retry"},
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )
    return _BUSY_503 % (len(body), body)


_HEAVY_MASK_KEYS = ("rle", "polygons")


def brief_answer(doc: dict[str, Any], latency_ms: float) -> dict[str, Any]:
    """The answer to a request with ``"masks": false``: the result JSON with each mask's
    encodings left out (ids, scores, boxes, areas, prompt facts stay), every other key as in
    the full answer (``files`` relative to ``result_dir``, prompt notes, text scores), and
    the trigger-to-answer latency."""
    brief = {k: v for k, v in doc.items() if k != "masks"}
    brief["masks"] = [
        {k: v for k, v in m.items() if k not in _HEAVY_MASK_KEYS} for m in doc.get("masks", [])
    ]
    brief["latency_ms"] = round(latency_ms, 1)
    return brief


class HttpError(Exception):
    """An error answer: status code, message and the offending request field."""

    def __init__(
        self,
        status: int,
        message: str,
        field_name: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field_name
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.field:
            out["field"] = self.field
        return out


@dataclass
class TriggerRequest:
    """A validated ``POST /trigger`` body, and its life: pending, started or cancelled."""

    prompt_json: Any = None
    prompts: Any = None
    conf: float | None = None
    iou: float | None = None
    save: bool = True
    masks: bool = True
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    response: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False
    started: bool = False
    _state: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def finish(
        self, status: int, response: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        """Complete the request (called by the service; wakes the HTTP thread)."""
        self.status, self.response, self.headers = status, response, headers or {}
        self.done.set()

    def cancel(self) -> bool:
        """Give up on the request (its caller timed out); False if segmentation already began."""
        with self._state:
            if not self.started:
                self.cancelled = True
            return self.cancelled

    def start(self) -> bool:
        """Claim the request for segmentation; False if it was cancelled (skip it)."""
        with self._state:
            if not self.cancelled:
                self.started = True
            return self.started


class SessionCheck(Protocol):
    """Login sessions (``edge.service.web.Sessions``): a valid cookie authorises like the token."""

    def valid(self, cookie_headers: list[str]) -> bool: ...


class ServiceAPI(Protocol):
    """What the HTTP layer needs from the service."""

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def metrics_text(self) -> str: ...

    def latest(self) -> dict[str, Any] | None: ...

    def submit(self, request: TriggerRequest) -> None: ...

    def cancel(self, request: TriggerRequest) -> None: ...

    def count_request(self, path: str, status: int) -> None: ...


# ------------------------------------------------------------------------------------------
# request bodies
# ------------------------------------------------------------------------------------------


def _json_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number has {digits} digits (at most {MAX_NUMBER_DIGITS})")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number has {len(text)} characters (at most {MAX_NUMBER_DIGITS})")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def _json_constant(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def _json_depth(obj: Any) -> int:
    """Nesting depth of a decoded JSON value (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            values = node.values() if isinstance(node, dict) else node
            stack.extend((v, depth + 1) for v in values)
    return deepest


def load_json_body(raw: bytes) -> Any:
    """Decode a JSON request body with limits on nesting and number size.

    Raises:
        HttpError: 400 (``field`` = ``body``) for text that is not UTF-8 JSON, nests deeper
            than :data:`MAX_JSON_DEPTH`, or holds an oversized or non-finite number.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "body: not UTF-8 text", "body") from None
    try:
        value = json.loads(
            text,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"body: invalid JSON: {exc}", "body") from None
    except RecursionError:
        raise HttpError(
            400, f"body: JSON nested too deeply (at most {MAX_JSON_DEPTH} levels)", "body"
        ) from None
    except ValueError as exc:
        raise HttpError(400, f"body: {exc}", "body") from None
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise HttpError(
            400, f"body: JSON nested too deeply (at most {MAX_JSON_DEPTH} levels)", "body"
        )
    return value


def _threshold(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HttpError(400, f"{key}: expected a number in [0, 1], got {value!r}", key)
    if not 0.0 <= value <= 1.0:
        raise HttpError(400, f"{key}: expected a number in [0, 1], got {value!r}", key)
    return float(value)


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise HttpError(400, f"{key}: expected true or false, got {value!r}", key)
    return value


def load_json_object(raw: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
    """A request body that is a JSON object with only ``fields`` (empty body: ``{}``).

    Raises:
        HttpError: 400 naming the body or the unknown field.
    """
    body = load_json_body(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise HttpError(400, f"body: expected a JSON object, got {type(body).__name__}", "body")
    for key in body:
        if key not in fields:
            raise HttpError(400, f"{key}: unknown field; allowed: {', '.join(fields)}", str(key))
    return body


def parse_prompt_field(value: Any) -> list[Prompt]:
    """A body's ``prompt`` (the JSON prompt schema) as prompts.

    Raises:
        HttpError: 400 with ``field`` = ``prompt`` and the parser's message.
    """
    try:
        return parse_prompts(value)
    except (ValueError, TypeError, KeyError, IndexError, ArithmeticError) as exc:
        message = str(exc)
        if not message.startswith("prompt"):
            message = f"prompt: {message}"
        raise HttpError(400, message, "prompt") from None


def parse_trigger_body(raw: bytes) -> TriggerRequest:
    """Validate a ``POST /trigger`` body (empty = segment everything, defaults).

    Raises:
        HttpError: 400 naming the field.
    """
    if not raw.strip():
        return TriggerRequest()
    body = load_json_object(raw, TRIGGER_FIELDS)
    req = TriggerRequest(
        conf=_threshold(body, "conf"),
        iou=_threshold(body, "iou"),
        save=_flag(body, "save", True),
        masks=_flag(body, "masks", True),
    )
    prompt = body.get("prompt")
    if prompt is not None:
        req.prompts = parse_prompt_field(prompt)
        req.prompt_json = prompt
    return req


# ------------------------------------------------------------------------------------------
# Host names
# ------------------------------------------------------------------------------------------


def _normalise_host(value: str) -> str | None:
    """``Host`` header -> lower-case name or address without port and brackets (None: bad)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return name
    name, colon, port = value.partition(":")
    if colon and not (port.isdigit() and port.isascii()):
        return None
    name = name.rstrip(".")
    return name or None


def default_allowed_hosts(bind_host: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Host names accepted in the ``Host`` header for an API bound to ``bind_host``.

    Always the loopback names; for a non-loopback bind (``0.0.0.0``, a LAN address) also this
    machine's host name and ``<hostname>.local`` (mDNS). ``extra`` (``http.allowed_hosts``)
    adds names. The address a client connected to is accepted separately, per connection.
    """
    names = set(LOOPBACK_NAMES)
    if not is_loopback_host(bind_host):
        hostname = socket.gethostname().lower().rstrip(".")
        if hostname:
            names.update({hostname, hostname.split(".")[0] + ".local"})
    for entry in extra:
        name = _normalise_host(entry) if entry != "*" else "*"
        if name:
            names.add(name)
    return frozenset(names)


# ------------------------------------------------------------------------------------------
# wrong credentials
# ------------------------------------------------------------------------------------------


@dataclass
class _Strikes:
    """Wrong credentials of one address (or of all): count, last one, back-off end."""

    failures: int = 0
    last: float = -math.inf
    until: float = -math.inf

    def fail(self, now: float, free: int) -> None:
        if now - self.last > AUTH_FORGET_S:
            self.failures = 0
        self.failures += 1
        self.last = now
        if self.failures >= free:
            backoff = AUTH_BACKOFF_S * 2.0 ** min(self.failures - free, 16)
            self.until = now + min(backoff, AUTH_BACKOFF_MAX_S)


@dataclass
class _Bucket:
    """Wrong credentials of all addresses together: a leaky bucket that drains
    :data:`AUTH_FREE_FAILURES_ALL` per :data:`AUTH_WINDOW_S`, so one slow guesser (already
    throttled per address) never locks everyone out; a full bucket starts a back-off that
    doubles while the bucket stays full."""

    level: float = 0.0
    at: float = -math.inf
    until: float = -math.inf
    trips: int = 0

    def fail(self, now: float) -> None:
        drained = (now - self.at) * AUTH_FREE_FAILURES_ALL / AUTH_WINDOW_S
        self.level = max(0.0, self.level - drained)
        if self.level == 0.0:
            self.trips = 0
        self.level += 1.0
        self.at = now
        if self.level >= AUTH_FREE_FAILURES_ALL:
            backoff = AUTH_BACKOFF_S * 2.0 ** min(self.trips, 16)
            self.until = now + min(backoff, AUTH_BACKOFF_MAX_S)
            self.trips += 1


def client_key(address: str) -> str:
    """The throttle's key of a client address: the address, an IPv6 one by its /64 (one host
    holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AuthThrottle:
    """One throttle for every wrong credential, per client address and overall (thread-safe).

    A handler asks :meth:`retry_after` before it checks a credential (a positive answer means
    429 without checking), then reports the outcome with :meth:`failed` or :meth:`succeeded`.

    Args:
        clock: Monotonic time (tests pass a fake one).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, _Strikes] = OrderedDict()
        self._all = _Bucket()
        self.failures_total = 0
        self.throttled_total = 0
        self.evictions = 0
        self._since_log = 0
        self._throttled_since_log = 0
        self._addresses: set[str] = set()
        self._last_address = ""
        self._logged_at = -math.inf

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may present a credential again (0: now); a positive
        answer is counted as a throttled request."""
        now = self._clock()
        with self._lock:
            own = self._clients.get(client_key(address))
            wait = max(own.until - now if own else 0.0, self._all.until - now, 0.0)
            if wait > 0:
                self.throttled_total += 1
                self._throttled_since_log += 1
        self.flush_log()
        return wait

    def failed(self, address: str) -> None:
        """``address`` presented a wrong credential."""
        now = self._clock()
        key = client_key(address)
        with self._lock:
            own = self._clients.pop(key, None) or _Strikes()
            own.fail(now, AUTH_FREE_FAILURES)
            self._clients[key] = own
            while len(self._clients) > AUTH_MAX_CLIENTS:
                self._clients.popitem(last=False)
                self.evictions += 1
            self._all.fail(now)
            self.failures_total += 1
            self._since_log += 1
            if len(self._addresses) < 1000:
                self._addresses.add(key)
            self._last_address = key
        self.flush_log()

    def succeeded(self, address: str) -> None:
        """``address`` presented the right credential: its own failures are forgotten."""
        with self._lock:
            self._clients.pop(client_key(address), None)

    def flush_log(self) -> None:
        """Log what happened since the last WARNING, at most once per
        :data:`AUTH_LOG_INTERVAL_S` (the first failure after a quiet minute at once)."""
        now = self._clock()
        with self._lock:
            if not (self._since_log or self._throttled_since_log):
                return
            if now - self._logged_at < AUTH_LOG_INTERVAL_S:
                return
            failures, throttled = self._since_log, self._throttled_since_log
            addresses, last = len(self._addresses), self._last_address
            self._since_log = self._throttled_since_log = 0
            self._addresses.clear()
            self._logged_at = now
        _LOGGER.warning(
            "http: %d wrong credential(s) from %d address(es) (last: %s) and %d request(s) "
            "answered 429 while throttled, since the last such warning",
            failures,
            addresses,
            last or "-",
            throttled,
        )

    def stats(self) -> dict[str, int]:
        """The remembered addresses as a cache (``entries``, ``bytes``, bounds, evictions)."""
        with self._lock:
            n = len(self._clients)
        return {
            "entries": n,
            "bytes": n * AUTH_CLIENT_BYTES,
            "max_entries": AUTH_MAX_CLIENTS,
            "max_bytes": AUTH_MAX_CLIENTS * AUTH_CLIENT_BYTES,
            "evictions": self.evictions,
        }


def throttled_error(wait: float) -> HttpError:
    """The 429 for a credential presented during a back-off."""
    seconds = max(1, math.ceil(wait))
    return HttpError(
        429,
        f"authorization: too many wrong credentials; retry in {seconds} s",
        "authorization",
        {"Retry-After": str(seconds)},
    )


# ------------------------------------------------------------------------------------------
# routes
# ------------------------------------------------------------------------------------------

RouteFn = Callable[["_Handler", bytes], None]


@dataclass(frozen=True)
class Route:
    """One method of one path.

    Attributes:
        fn: Called with the handler and the (checked, complete) body; answers with
            :meth:`_Handler.send_json` / :meth:`_Handler.send_bytes` or raises HttpError.
        public: No token needed (``/healthz``).
        content_types: Accepted body media types (POST); anything else is 415.
        counted: Holds one of the ``http.max_connections`` slots while it runs. A
            long-lived stream sets False: its slot is given back once the request is routed.
    """

    fn: RouteFn
    public: bool = False
    content_types: tuple[str, ...] = ("application/json",)
    counted: bool = True


def _get_healthz(h: _Handler, _body: bytes) -> None:
    status, doc = h.api.health()
    h.send_json(status, doc)


def _get_metrics(h: _Handler, _body: bytes) -> None:
    text = h.api.metrics_text().encode("utf-8")
    h.send_bytes(200, text, "text/plain; version=0.0.4; charset=utf-8")


def _get_latest(h: _Handler, _body: bytes) -> None:
    doc = h.api.latest()
    if doc is None:
        raise HttpError(404, "latest: no result yet", "path")
    h.send_json(200, doc)


def _post_trigger(h: _Handler, body: bytes) -> None:
    req = parse_trigger_body(body)
    acquire_busy(h)
    try:
        h.api.submit(req)
        await_request(h, req)
    finally:
        h.busy.release()
    h.send_json(req.status, req.response, req.headers)


def acquire_busy(h: Any) -> None:
    """Take the one-request-at-a-time lock without waiting (there is no queue); the caller
    releases ``h.busy`` when its answer is sent.

    Raises:
        HttpError: 503 with ``Retry-After`` while another request is being processed.
    """
    if not h.busy.acquire(blocking=False):
        raise HttpError(
            503,
            "busy: another request is being processed; retry later",
            None,
            {"Retry-After": "1"},
        )


def await_request(h: Any, req: Any) -> None:
    """Wait up to ``http.request_timeout_s`` for a submitted request; on timeout cancel it (else
    its frame would be segmented later, for nobody) and answer 504.

    Raises:
        HttpError: 504 when no result came in time.
    """
    if not req.done.wait(h.request_timeout_s):
        h.api.cancel(req)
        if req.cancelled or not req.done.is_set():
            raise HttpError(
                504,
                f"timeout: no result within {h.request_timeout_s:g} s (http.request_timeout_s)",
            )


def default_routes() -> dict[str, dict[str, Route]]:
    """The route table: path -> method -> :class:`Route` (``HEAD`` uses ``GET``'s)."""
    return {
        "/healthz": {"GET": Route(_get_healthz, public=True)},
        "/metrics": {"GET": Route(_get_metrics)},
        "/latest": {"GET": Route(_get_latest)},
        "/trigger": {"POST": Route(_post_trigger)},
    }


# ------------------------------------------------------------------------------------------
# connections: slots and lingering close
# ------------------------------------------------------------------------------------------


class _Slot:
    """One of the ``http.max_connections`` slots; released once, however often called."""

    def __init__(self, sem: threading.BoundedSemaphore) -> None:
        self._sem: threading.BoundedSemaphore | None = sem
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            sem, self._sem = self._sem, None
        if sem is not None:
            sem.release()


class _Linger:
    """Closes connections without losing the answer: FIN first, then drain, then close.

    Closing a socket with unread request bytes makes the kernel send a reset, which can
    destroy the answer before the client reads it. So the write side is shut, what the
    client still sends is read and discarded (at most :data:`LINGER_S` seconds and
    :data:`LINGER_MAX_BYTES`), and then the socket is closed. One thread does it for all.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._incoming: deque[socket.socket] = deque()
        self._lock = threading.Lock()
        self._socks: dict[socket.socket, tuple[float, int]] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="http-linger", daemon=True)
        self._thread.start()

    def close(self, sock: socket.socket, first: bytes = b"") -> None:
        """Send ``first`` (if any), shut the write side, and close once the client is done."""
        try:
            sock.setblocking(False)
            if first:
                sock.send(first)  # a fresh socket's send buffer takes a short answer whole
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        with self._lock:
            if self._stop or len(self._incoming) + len(self._socks) >= LINGER_MAX_SOCKETS:
                sock.close()
                return
            self._incoming.append(sock)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # the wake pipe is full: the thread is awake anyway

    def stop(self) -> None:
        with self._lock:
            self._stop = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._lock:
                stopping = self._stop
                while self._incoming:
                    sock = self._incoming.popleft()
                    self._socks[sock] = (time.monotonic() + LINGER_S, 0)
                    self._selector.register(sock, selectors.EVENT_READ)
            if stopping:
                break
            for key, _ in self._selector.select(timeout=0.25):
                sock = key.fileobj
                if sock is self._wake_r:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                    continue
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                deadline, total = self._socks[sock]
                if not data or total + len(data) > LINGER_MAX_BYTES:
                    self._drop(sock)
                else:
                    self._socks[sock] = (deadline, total + len(data))
            now = time.monotonic()
            for sock, (deadline, _) in list(self._socks.items()):
                if now >= deadline:
                    self._drop(sock)
        for sock in list(self._socks):
            self._drop(sock)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _drop(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        del self._socks[sock]
        sock.close()


def _log_disconnect(where: str, exc: BaseException) -> None:
    """One log line, no traceback: clients that go away or stall are normal on a network."""
    if isinstance(exc, TimeoutError):
        _LOGGER.info("http: client %s too slow, connection closed: %s", where, exc)
    else:
        _LOGGER.info("http: client %s went away: %s", where, getattr(exc, "strerror", None) or exc)


_DISCONNECTS = (ConnectionError, TimeoutError)


class _BoundedServer(socketserver.BaseServer):
    """A mixin for socketserver servers: bounded handler threads, fast 503, lingering close."""

    request_queue_size = BACKLOG
    slots: threading.BoundedSemaphore
    max_connections: int
    linger: _Linger
    on_reject: Callable[[], None]
    _refused = 0
    _refused_logged_at = -math.inf

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.on_reject()
            self.linger.close(request, _busy_response(self.max_connections))
            self._note_refused()
            return
        slot = _Slot(self.slots)
        thread = threading.Thread(
            target=self._serve_one,
            args=(request, client_address, slot),
            name="http-handler",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # cannot start a thread (memory): answer busy, keep serving
            slot.release()
            self.linger.close(request, _busy_response(self.max_connections))

    def service_actions(self) -> None:
        # the accept loop runs this every poll: a throttle warning held back is logged on time
        throttle = getattr(self.RequestHandlerClass, "throttle", None)
        if throttle is not None:
            throttle.flush_log()

    def _note_refused(self) -> None:
        """A warning at most once a minute, with the count (the accept thread only)."""
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= REFUSED_LOG_INTERVAL_S:
            _LOGGER.warning(
                "http: %d connection(s) answered 503: all http.max_connections = %d in use",
                self._refused,
                self.max_connections,
            )
            self._refused, self._refused_logged_at = 0, now

    def _serve_one(self, request: Any, client_address: Any, slot: _Slot) -> None:
        try:
            self.RequestHandlerClass(request, client_address, self, slot)  # type: ignore[call-arg]
        except Exception:
            self.handle_error(request, client_address)
        finally:
            slot.release()
            self.shutdown_request(request)

    def shutdown_request(self, request: Any) -> None:
        self.linger.close(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # the stdlib prints a traceback to stderr here, around the log format
        exc = sys.exc_info()[1]
        where = _peer(client_address)
        if isinstance(exc, _DISCONNECTS):
            _log_disconnect(where, exc)
        else:
            _LOGGER.error("http: error serving %s", where, exc_info=exc)


def _peer(client_address: Any) -> str:
    if isinstance(client_address, tuple) and client_address:
        return str(client_address[0])
    return "unix"


class _TCPServer(_BoundedServer, socketserver.TCPServer):
    allow_reuse_address = True


class _UnixServer(_BoundedServer, socketserver.UnixStreamServer):
    def server_bind(self) -> None:
        path = Path(self.server_address)  # type: ignore[arg-type]
        _claim_socket_path(path)
        super().server_bind()
        os.chmod(path, 0o660)
        self.inode = path.stat().st_ino


def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket left by a crash; refuse a live one or a file that is no socket.

    Raises:
        ConfigError: Naming ``http.unix_socket``.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(
            f"http.unix_socket: {str(path)!r} exists and is not a socket; remove it or choose "
            "another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # nobody listens: a stale socket from a previous run
        return
    except OSError as exc:  # a timeout (a live server, overloaded), no permission...
        raise ConfigError(
            f"http.unix_socket: cannot check whether {str(path)!r} is in use: "
            f"{exc.strerror or exc!r}"
        ) from None
    finally:
        probe.close()
    raise ConfigError(
        f"http.unix_socket: {str(path)!r} is in use by another running server (it accepted a "
        "connection); stop that instance or set another http.unix_socket"
    )


# ------------------------------------------------------------------------------------------
# the request handler
# ------------------------------------------------------------------------------------------


class _DeadlineReader(io.RawIOBase):
    """The socket as a raw stream whose reads fail once ``deadline`` (monotonic) is past.

    A socket timeout alone restarts with every byte, so a client trickling one header byte
    every few seconds would hold a connection slot forever.
    """

    def __init__(self, sock: socket.socket, idle_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._idle_s = idle_s
        self.deadline = math.inf

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(min(remaining, self._idle_s))
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server_version = "fastsam-edge"
    protocol_version = "HTTP/1.1"
    timeout = 15  # seconds for a request line and headers, in all; then the connection closes

    api: ServiceAPI
    token: str
    max_body: int
    request_timeout_s: float
    busy: threading.Lock
    routes: Mapping[str, Mapping[str, Route]]
    allowed_hosts: frozenset[str]
    check_host: bool
    sessions: SessionCheck | None = None
    throttle: AuthThrottle

    def __init__(self, request: Any, client_address: Any, server: Any, slot: _Slot) -> None:
        self.slot = slot
        self._expect_continue = False
        self._reader = _DeadlineReader(request, self.timeout)
        super().__init__(request, client_address, server)

    # -- stdlib hooks -------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the stdlib's reader; ours enforces a deadline per request
        self.rfile = io.BufferedReader(self._reader, 65536)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + self.timeout  # request line and headers
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        _LOGGER.debug("http: " + format, *args)

    def address_string(self) -> str:
        return _peer(self.client_address)

    def handle_expect_100(self) -> bool:
        # the stdlib answers "100 Continue" before any check; we do it after auth and limits
        self._expect_continue = True
        return True

    def send_error(
        self, code: int, message: str | None = None, explain: str | None = None
    ) -> None:
        """Requests the stdlib parser rejects (bad request line, 414, 431, unknown method):
        a JSON answer like every other error, and the connection closes."""
        self.close_connection = True
        reason = message or self.responses.get(code, ("error",))[0]
        body = (json.dumps({"error": f"request: {reason}"}) + "\n").encode("utf-8")
        self.log_error("code %d, message %s", code, reason)
        self.connection.settimeout(self.timeout)
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET  # noqa: N815

    # -- answering ----------------------------------------------------------------------------

    def send_bytes(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        """Answer with ``body`` (not sent for HEAD) and count the request."""
        self.connection.settimeout(self.timeout)  # reads may have left a shorter one
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.api.count_request(self._route_path(), status)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        """Answer with ``obj`` as compact JSON."""
        body = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
        self.send_bytes(status, body, "application/json", headers)

    def _error(self, err: HttpError) -> None:
        # after an error nothing more is read from this connection: a body left unread
        # (401, 413...) is drained by the lingering close, never parsed as a request
        headers = {**err.headers, "Connection": "close"}
        self.close_connection = True
        self.send_json(err.status, err.body(), headers)

    # -- the checks every route gets ----------------------------------------------------------

    def _route_path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _dispatch(self) -> None:
        try:
            self._check_host()
            route = self._lookup()
            if not route.counted:
                self.slot.release()
                self.close_connection = True  # no slot: no further requests on it
            if not route.public:
                self._require_auth()
            body = self._receive_body(route)
            self.connection.settimeout(self.timeout)  # for writing the answer
            route.fn(self, body)
        except HttpError as err:
            self._send_error_safely(err)
        except _DISCONNECTS as exc:
            self.close_connection = True
            _log_disconnect(self.address_string(), exc)
        except Exception as exc:  # a handler bug must not kill the server
            _LOGGER.exception("http: %s %s failed", self.command, self._route_path())
            self._send_error_safely(HttpError(500, f"internal error: {type(exc).__name__}"))

    def _send_error_safely(self, err: HttpError) -> None:
        try:
            self._error(err)
        except _DISCONNECTS as exc:
            self.close_connection = True
            _log_disconnect(self.address_string(), exc)

    def _check_host(self) -> None:
        values = self.headers.get_all("Host") or []
        if len(values) > 1:
            raise HttpError(400, "Host: more than one Host header", "Host")
        if not values:
            if self.request_version == "HTTP/1.0":
                return  # HTTP/1.0 clients may omit it; browsers never do
            raise HttpError(400, "Host: missing (HTTP/1.1 requires it)", "Host")
        if not self.check_host or "*" in self.allowed_hosts:
            return
        name = _normalise_host(values[0])
        if name is not None and (name in self.allowed_hosts or self._is_local_address(name)):
            return
        raise HttpError(
            421,
            f"Host: {values[0][:100]!r} is not a name of this device; add it to "
            "http.allowed_hosts if you reach the API by that name",
            "Host",
        )

    def _is_local_address(self, name: str) -> bool:
        """An IP literal of the address this client connected to (cannot be rebound)."""
        try:
            got = ipaddress.ip_address(name)
            local = ipaddress.ip_address(self.connection.getsockname()[0].split("%")[0])
        except (ValueError, OSError, IndexError, TypeError):
            return False
        if isinstance(local, ipaddress.IPv6Address) and local.ipv4_mapped is not None:
            local = local.ipv4_mapped
        return got == local

    def _lookup(self) -> Route:
        path = self._route_path()
        methods = self.routes.get(path)
        if methods is None:
            raise HttpError(404, f"path: no such endpoint {path[:100]!r}", "path")
        route = methods.get("GET" if self.command == "HEAD" else self.command)
        if route is None:
            allow = ", ".join(sorted(methods))
            raise HttpError(
                405,
                f"method: use {' or '.join(sorted(methods))} {path}",
                "method",
                {"Allow": allow},
            )
        return route

    def _authorised(self) -> bool:
        """Whether the request carries a valid session cookie or the bearer token.

        A presented ``Authorization`` header goes through the throttle.

        Raises:
            HttpError: 429 while this client (or everyone) is backing off.
        """
        if not self.token:
            return True
        if self.sessions is not None and self.sessions.valid(self.headers.get_all("Cookie") or []):
            return True  # the page's login cookie (edge.service.web)
        got = self.headers.get("Authorization")
        if got is None:
            return False  # nothing presented, nothing guessed
        self.guard_credential()
        scheme, _, value = got.partition(" ")
        try:
            # header bytes arrive decoded as Latin-1: these are the bytes sent (UTF-8 for a
            # non-ASCII token)
            raw = value.strip().encode("latin-1")
        except UnicodeEncodeError:
            raw = b""
        ok = scheme.lower() == "bearer" and hmac.compare_digest(raw, self.token.encode("utf-8"))
        self.record_credential(ok)
        return ok

    def guard_credential(self) -> None:
        """Call before checking a presented credential.

        Raises:
            HttpError: 429 with ``Retry-After`` while a back-off runs (nothing is checked).
        """
        wait = self.throttle.retry_after(self.address_string())
        if wait > 0:
            raise throttled_error(wait)

    def record_credential(self, ok: bool) -> None:
        """Report a checked credential to the throttle."""
        if ok:
            self.throttle.succeeded(self.address_string())
        else:
            self.throttle.failed(self.address_string())

    def _require_auth(self) -> None:
        """Raise 401 unless the request carries the configured bearer token."""
        if not self._authorised():
            raise HttpError(
                401,
                "authorization: missing or wrong bearer token",
                "authorization",
                {"WWW-Authenticate": "Bearer"},
            )

    def _content_length(self) -> int:
        if self.headers.get_all("Transfer-Encoding"):
            raise HttpError(
                411, "body: chunked bodies are not accepted; send Content-Length", "body"
            )
        values = self.headers.get_all("Content-Length") or []
        if len(values) > 1:
            raise HttpError(
                400, f"Content-Length: sent {len(values)} times; send it once", "Content-Length"
            )
        if not values:
            return 0
        text = values[0].strip()
        if not (text.isdigit() and text.isascii() and len(text) <= 19):
            raise HttpError(
                400, f"Content-Length: invalid value {values[0][:40]!r}", "Content-Length"
            )
        return int(text)

    def _receive_body(self, route: Route) -> bytes:
        expect, self._expect_continue = self._expect_continue, False
        length = self._content_length()
        if self.command == "POST":
            ctype = self.headers.get("Content-Type", "")
            media = ctype.split(";", 1)[0].strip().lower()
            if media not in route.content_types:
                raise HttpError(
                    415,
                    f"Content-Type: expected {' or '.join(route.content_types)}, got "
                    f"{ctype[:60]!r} (send -H 'Content-Type: application/json', also for an "
                    "empty body)",
                    "Content-Type",
                )
        if length > self.max_body:
            raise HttpError(
                413,
                f"body: {length} bytes exceed http.max_body_bytes = {self.max_body}",
                "body",
            )
        if expect and length:
            self.send_response_only(100)
            self.end_headers()
        return self._read_exact(length) if length else b""

    def _read_exact(self, length: int) -> bytes:
        limit = BODY_TIMEOUT_S + length / 32768
        self._reader.deadline = time.monotonic() + limit
        chunks: list[bytes] = []
        got = 0
        try:
            while got < length:
                chunk = self.rfile.read1(length - got)
                if not chunk:
                    raise HttpError(
                        400,
                        f"body: the connection ended after {got} of {length} bytes "
                        "(Content-Length)",
                        "body",
                    )
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            raise HttpError(
                400,
                f"body: only {got} of {length} bytes (Content-Length) arrived within "
                f"{limit:.1f} s",
                "body",
            ) from None
        return b"".join(chunks)


# ------------------------------------------------------------------------------------------
# the server
# ------------------------------------------------------------------------------------------


class ApiServer:
    """Runs the API on TCP and/or a Unix socket, each in its own thread.

    Raises:
        ConfigError: ``http.unix_socket`` is served by another running instance, or is a file
            that is not a socket.
    """

    def __init__(
        self,
        api: ServiceAPI,
        host: str = "127.0.0.1",
        port: int | None = 8080,
        unix_socket: str = "",
        token: str = "",
        max_body: int = 65536,
        request_timeout_s: float = 300.0,
        max_connections: int = 32,
        allowed_hosts: tuple[str, ...] | list[str] = (),
        routes: Mapping[str, Mapping[str, Route]] | None = None,
        sessions: SessionCheck | None = None,
        throttle: AuthThrottle | None = None,
    ) -> None:
        self.throttle = throttle or AuthThrottle()
        self._sessions = sessions
        attrs = {
            "api": api,
            "token": token,
            "max_body": max_body,
            "request_timeout_s": request_timeout_s,
            "busy": threading.Lock(),
            "routes": routes if routes is not None else default_routes(),
            "sessions": sessions,
            "allowed_hosts": default_allowed_hosts(host, tuple(allowed_hosts)),
            "throttle": self.throttle,
        }
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self.unix_socket = unix_socket
        self.port: int | None = None
        self._linger = _Linger()
        server_attrs = {
            "slots": threading.BoundedSemaphore(max_connections),
            "max_connections": max_connections,
            "linger": self._linger,
            "on_reject": staticmethod(lambda: api.count_request("*", 503)),
        }
        self._unix: _UnixServer | None = None
        try:
            if port is not None:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                handler = type("Handler", (_Handler,), {**attrs, "check_host": True})
                tcp_cls = type("TCP", (_TCPServer,), {"address_family": family, **server_attrs})
                tcp = tcp_cls((host, port), handler)
                self.port = tcp.server_address[1]
                self._servers.append(tcp)
            if unix_socket:
                Path(unix_socket).parent.mkdir(parents=True, exist_ok=True)
                handler = type("Handler", (_Handler,), {**attrs, "check_host": False})
                unix_cls = type("Unix", (_UnixServer,), server_attrs)
                self._unix = unix_cls(unix_socket, handler)
                self._servers.append(self._unix)
        except BaseException:
            for server in self._servers:
                server.server_close()
            self._linger.stop()
            raise

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """The server's client-fed caches: ``auth_clients`` (the throttle's addresses) and
        ``sessions`` (the page's logins, when the sessions tell)."""
        out = {"auth_clients": self.throttle.stats()}
        stats = getattr(self._sessions, "stats", None)
        if callable(stats):
            out["sessions"] = stats()
        return out

    def start(self) -> None:
        for server in self._servers:
            t = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"http-{type(server).__name__}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        for server in self._servers:
            if self._threads:
                server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._linger.stop()
        if self._unix is not None:
            # only our own socket: another instance may have replaced the path meanwhile
            try:
                if os.stat(self.unix_socket).st_ino == self._unix.inode:
                    os.unlink(self.unix_socket)
            except OSError:
                pass
