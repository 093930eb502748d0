"""The local HTTP API (stdlib ``http.server``), over TCP and/or a Unix socket.

Endpoints:

* ``POST /trigger``: capture a frame now, segment it, return the result JSON (the
  ``fastsam-edge segment`` schema plus ``files`` / ``result_dir``). Optional JSON body::

      {"prompt": [{"type": "point", "data": [x, y], "label": 1},
                  {"type": "box", "data": [x1, y1, x2, y2]},
                  {"type": "text", "data": "a red circle"}],
       "conf": 0.4, "iou": 0.9, "save": true, "masks": true}

  Prompt coordinates are pixels of the stored image (the result's ``image`` size: the frame
  after orientation, ROI and the resolution cap). ``save`` = false skips the result files;
  ``masks`` = false answers with the compact summary instead of the full result.
  While another request is being processed the answer is **503** (``Retry-After``), not a
  queue. Errors: 400 (bad JSON or field, named in ``field``), 401 (token), 404, 405, 411,
  413 (body over ``http.max_body_bytes``), 501 (prompts unsupported by this installation),
  503 (busy, source down, stopping), 504 (``http.request_timeout_s``).
* ``GET /healthz``: JSON health (200 healthy, 503 stalled / source down); no token needed.
* ``GET /metrics``: Prometheus text.
* ``GET /latest``: the last result JSON (404 before the first).
"""

from __future__ import annotations

import hmac
import importlib
import json
import logging
import math
import os
import socket
import socketserver
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

_LOGGER = logging.getLogger(__name__)

TRIGGER_FIELDS = ("prompt", "conf", "iou", "save", "masks")


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
    """A validated ``POST /trigger`` body."""

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

    def finish(
        self, status: int, response: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        """Complete the request (called by the service; wakes the HTTP thread)."""
        self.status, self.response, self.headers = status, response, headers or {}
        self.done.set()


class ServiceAPI(Protocol):
    """What the HTTP layer needs from the service."""

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def metrics_text(self) -> str: ...

    def latest(self) -> dict[str, Any] | None: ...

    def supports_prompts(self) -> bool: ...

    def submit(self, request: TriggerRequest) -> None: ...

    def count_request(self, path: str, status: int) -> None: ...


def load_prompt_parser() -> Callable[[Any], Any]:
    """``edge.prompts.parse_prompts``, imported when a request carries a prompt.

    Raises:
        HttpError: 501 when this installation has no prompt support (``edge.prompts`` missing).
    """
    try:
        module = importlib.import_module("edge.prompts")
    except ModuleNotFoundError as exc:
        if exc.name not in ("edge.prompts", "edge"):
            raise
        raise HttpError(
            501,
            "prompts are not supported by this installation: module edge.prompts is missing "
            "(update fastsam-edge); send the request without 'prompt' to segment everything",
            "prompt",
        ) from None
    parse = getattr(module, "parse_prompts", None)
    if parse is None:
        raise HttpError(
            501, "prompts are not supported: edge.prompts has no parse_prompts", "prompt"
        )
    return parse  # type: ignore[no-any-return]


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


def parse_trigger_body(raw: bytes, api: ServiceAPI) -> TriggerRequest:
    """Validate a ``POST /trigger`` body (empty = segment everything, defaults).

    Raises:
        HttpError: 400 naming the field, or 501 for prompts without prompt support.
    """
    if not raw.strip():
        return TriggerRequest()
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise HttpError(400, "body: not UTF-8 text", "body") from None
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"body: invalid JSON: {exc}", "body") from None
    if not isinstance(body, dict):
        raise HttpError(400, f"body: expected a JSON object, got {type(body).__name__}", "body")
    for key in body:
        if key not in TRIGGER_FIELDS:
            raise HttpError(
                400, f"{key}: unknown field; allowed: {', '.join(TRIGGER_FIELDS)}", str(key)
            )
    req = TriggerRequest(
        conf=_threshold(body, "conf"),
        iou=_threshold(body, "iou"),
        save=_flag(body, "save", True),
        masks=_flag(body, "masks", True),
    )
    prompt = body.get("prompt")
    if prompt is not None:
        parse = load_prompt_parser()
        if not api.supports_prompts():
            raise HttpError(
                501,
                "prompts are not supported by the loaded segmenter (no prompt= argument)",
                "prompt",
            )
        try:
            req.prompts = parse(prompt)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            message = str(exc)
            if not message.startswith("prompt"):
                message = f"prompt: {message}"
            raise HttpError(400, message, "prompt") from None
        req.prompt_json = prompt
    return req


class _Handler(BaseHTTPRequestHandler):
    server_version = "fastsam-edge"
    protocol_version = "HTTP/1.1"
    timeout = 15  # seconds to receive a request: slow or stuck clients are cut off

    api: ServiceAPI
    token: str
    max_body: int
    request_timeout_s: float
    busy: threading.Lock

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        _LOGGER.debug("http: " + format, *args)

    def address_string(self) -> str:
        addr = self.client_address
        return str(addr[0]) if isinstance(addr, tuple) and addr else "unix"

    def _send(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.api.count_request(self.path.split("?")[0], status)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
        self._send(status, body, "application/json", headers)

    def _error(self, err: HttpError) -> None:
        headers = dict(err.headers)
        if err.status in (411, 413) or err.status >= 500 and err.status != 503:
            headers.setdefault("Connection", "close")
            self.close_connection = True
        self._json(err.status, err.body(), headers)

    def _authorised(self) -> bool:
        if not self.token:
            return True
        got = self.headers.get("Authorization", "")
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )

    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def do_GET(self) -> None:  # noqa: N802
        path = self._route()
        try:
            if path == "/healthz":
                status, body = self.api.health()
                self._json(status, body)
                return
            if path not in ("/metrics", "/latest", "/trigger"):
                raise HttpError(404, f"path: no such endpoint {path!r}", "path")
            self._require_auth()
            if path == "/metrics":
                text = self.api.metrics_text().encode("utf-8")
                self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/latest":
                doc = self.api.latest()
                if doc is None:
                    raise HttpError(404, "latest: no result yet", "path")
                self._json(200, doc)
            else:
                raise HttpError(405, "method: use POST /trigger", "method", {"Allow": "POST"})
        except HttpError as err:
            self._error(err)

    do_HEAD = do_GET  # noqa: N815

    def _require_auth(self) -> None:
        """Raise 401 unless the request carries the configured bearer token."""
        if not self._authorised():
            raise HttpError(
                401,
                "authorization: missing or wrong bearer token",
                "authorization",
                {"WWW-Authenticate": "Bearer"},
            )

    def do_POST(self) -> None:  # noqa: N802
        path = self._route()
        try:
            if path != "/trigger":
                if path in ("/healthz", "/metrics", "/latest"):
                    raise HttpError(405, f"method: use GET {path}", "method", {"Allow": "GET"})
                raise HttpError(404, f"path: no such endpoint {path!r}", "path")
            self._require_auth()
            raw = self._read_body()
            req = parse_trigger_body(raw, self.api)
            if not self.busy.acquire(blocking=False):
                raise HttpError(
                    503,
                    "busy: another request is being processed; retry later",
                    None,
                    {"Retry-After": "1"},
                )
            try:
                self.api.submit(req)
                if not req.done.wait(self.request_timeout_s):
                    raise HttpError(
                        504,
                        f"timeout: no result within {self.request_timeout_s:g} s "
                        "(http.request_timeout_s)",
                    )
            finally:
                self.busy.release()
            self._json(req.status, req.response, req.headers)
        except HttpError as err:
            self._error(err)
        except Exception as exc:  # a handler bug must not kill the server
            _LOGGER.exception("http: %s %s failed", self.command, self.path)
            self._error(HttpError(500, f"internal error: {exc!r}"))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise HttpError(
                411, "body: chunked bodies are not accepted; send Content-Length", "body"
            )
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise HttpError(
                400, f"Content-Length: invalid value {length_text!r}", "Content-Length"
            ) from None
        if length > self.max_body:
            raise HttpError(
                413,
                f"body: {length} bytes exceed http.max_body_bytes = {self.max_body}",
                "body",
            )
        return self.rfile.read(length)

    def _method_not_allowed(self) -> None:
        self._error(
            HttpError(
                405, f"method: {self.command} is not supported", "method", {"Allow": "GET, POST"}
            )
        )

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _method_not_allowed  # noqa: N815


class _TCPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def server_bind(self) -> None:
        path = Path(self.server_address)  # type: ignore[arg-type]
        if path.exists() and stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # a stale socket from a previous run
        super().server_bind()
        os.chmod(path, 0o660)


class ApiServer:
    """Runs the API on TCP and/or a Unix socket, each in its own thread."""

    def __init__(
        self,
        api: ServiceAPI,
        host: str = "127.0.0.1",
        port: int | None = 8080,
        unix_socket: str = "",
        token: str = "",
        max_body: int = 65536,
        request_timeout_s: float = 300.0,
    ) -> None:
        handler = type(
            "Handler",
            (_Handler,),
            {
                "api": api,
                "token": token,
                "max_body": max_body,
                "request_timeout_s": request_timeout_s,
                "busy": threading.Lock(),
            },
        )
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self.unix_socket = unix_socket
        self.port: int | None = None
        if port is not None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            tcp = type("TCP", (_TCPServer,), {"address_family": family})((host, port), handler)
            self.port = tcp.server_address[1]
            self._servers.append(tcp)
        if unix_socket:
            Path(unix_socket).parent.mkdir(parents=True, exist_ok=True)
            self._servers.append(_UnixServer(unix_socket, handler))

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
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        if self.unix_socket:
            try:
                os.unlink(self.unix_socket)
            except OSError:
                pass
