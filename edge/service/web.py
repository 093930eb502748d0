"""The browser page of the service (``GET /``) and the endpoints it uses.

The page (``edge/service/static/``: plain HTML, CSS and JavaScript, no build step, nothing
fetched from elsewhere) polls small endpoints instead of holding a stream open: a JPEG of the
live frame about twice a second, a JSON state once a second, ``/healthz`` and ``/metrics``
every two seconds. Polling works through every proxy and phone browser, costs a Pi nothing
while no page is open, and needs no long-lived connection slot (``http.max_connections``);
at 1-2 frames a second an MJPEG stream would save little.

Endpoints (all behind the same checks as the API: ``Host``, token, JSON bodies, limits):

* ``GET /``, ``GET /static/app.js``, ``GET /static/app.css``: the page (no token needed: it
  holds no data, it asks for the token).
* ``POST /login`` ``{"token": "..."}``: when ``http.token`` is set, answers 204 with a session
  cookie (``HttpOnly``, ``SameSite=Strict``) that then authorises the page's requests like the
  bearer token; 401 for a wrong token. ``POST /logout`` ends the session. ``GET /session``
  says whether a token is needed and whether this client has a valid session.
* ``GET /live.jpg?viewer=ID``: the newest frame read from the source (headers ``X-Frame-Id``,
  ``X-Frame-Name``, ``ETag``; 304 for ``If-None-Match`` of the frame the page has); while pages
  ask for it, a live source is read at ``http.live_fps``.
* ``GET /state``: live frame, last result, prompt cache, text-prompt support (the page's poll).
* ``POST /prompt`` ``{"frame_id": N | "latest", "prompt": [...], "save": false,
  "masks": true}``: prompts on a kept frame, answered from its cached detections (no detector
  run); 404 names a frame id that is no longer kept.
* ``GET /events/thumb?seq=N``: the JPEG of a recent enter / leave event (the events
  themselves come with ``GET /state``).
* ``GET /results``: the newest result directories, each with a ``summary`` (``num_masks``
  and, with an open vocabulary, ``counts``: masks per word); ``GET /results/file?name=...&
  file=json|overlay|frame|thumb``: one of their files (``thumb``: a small JPEG of the overlay).
* ``GET`` / ``POST /vocabulary`` (:mod:`edge.service.vocabulary`): the page's vocabulary box.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from edge.lru import BoundedLRU
from edge.service.http import (
    HttpError,
    Route,
    TriggerRequest,
    acquire_busy,
    await_request,
    load_json_body,
    load_json_object,
    parse_prompt_field,
)
from edge.service.live import (
    ANONYMOUS_VIEWER,
    CachedFrame,
    LiveFrame,
    PromptCache,
    encode_jpeg,
)
from edge.service.protocols import DetectsAndSelects
from edge.service.sink import OVERLAY_FILES, RESULT_JSON, RESULT_NAME, result_frame_id
from edge.service.vocabulary import label_counts

_LOGGER = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
COOKIE = "fastsam_session"
SESSION_TTL_S = 7 * 86400.0
MAX_SESSIONS = 64
SESSION_BYTES = 256
"""Memory of one session (id and expiry), for the cache metrics."""
RECENT_RESULTS = 20
THUMB_WIDTH = 160
PROMPT_FIELDS = ("frame_id", "prompt", "save", "masks")
RESULT_FILES = {
    "json": (RESULT_JSON,),
    "overlay": tuple(OVERLAY_FILES.values()),
    "frame": ("frame.jpg", "frame.png"),
}
# A page may never be framed by another site (clickjacking) nor load anything from elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class PageService(Protocol):
    """What the page's endpoints need from the service (:class:`edge.service.runner.Service`)."""

    live: LiveFrame
    prompt_cache: PromptCache
    segmenter: Any

    def latest(self) -> dict[str, Any] | None: ...

    def submit_prompt(self, request: TriggerRequest, entry: CachedFrame) -> None: ...

    def page_facts(self) -> dict[str, Any]: ...

    def results_dir(self) -> Path: ...

    def monotonic(self) -> float: ...

    def event_thumbnail(self, seq: int) -> bytes | None: ...


class Sessions:
    """Login sessions of the page: random ids in memory (a restart logs pages out)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, float] = OrderedDict()
        self.evictions = 0

    @property
    def required(self) -> bool:
        """A token is configured."""
        return bool(self.token)

    def login(self, token: Any) -> str | None:
        """A new session id if ``token`` is the configured token, else None."""
        if not self.token or not isinstance(token, str):
            return None
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return None
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._ids[sid] = time.monotonic() + SESSION_TTL_S
            while len(self._ids) > MAX_SESSIONS:
                self._ids.popitem(last=False)
                self.evictions += 1
        return sid

    def valid(self, cookie_headers: list[str]) -> bool:
        """Whether the request's ``Cookie`` headers carry a live session (any of the session
        cookies sent: a stale one from another path or port may come first)."""
        sids = session_ids(cookie_headers)
        if not sids:
            return False
        with self._lock:
            now = time.monotonic()
            for sid in sids:
                # compare every id: constant time in the guessed value
                match = [k for k in self._ids if hmac.compare_digest(k.encode(), sid.encode())]
                if not match:
                    continue
                if self._ids[match[0]] < now:
                    del self._ids[match[0]]
                    continue
                return True
            return False

    def stats(self) -> dict[str, int]:
        """The sessions as a cache (``entries``, ``bytes``, bounds, evictions)."""
        with self._lock:
            n = len(self._ids)
        return {
            "entries": n,
            "bytes": n * SESSION_BYTES,
            "max_entries": MAX_SESSIONS,
            "max_bytes": MAX_SESSIONS * SESSION_BYTES,
            "evictions": self.evictions,
        }

    def logout(self, cookie_headers: list[str]) -> None:
        """End the sessions the request's cookies name (if any)."""
        with self._lock:
            for sid in session_ids(cookie_headers):
                self._ids.pop(sid, None)


MAX_SESSION_COOKIES = 8
"""Session cookies of one request that are checked (a request may carry several)."""


def session_ids(cookie_headers: list[str]) -> list[str]:
    """The session cookie's values from ``Cookie`` headers, in order (at most
    :data:`MAX_SESSION_COOKIES`)."""
    out: list[str] = []
    for header in cookie_headers:
        for part in header.split(";"):
            name, eq, value = part.strip().partition("=")
            if eq and name == COOKIE and value.strip():
                out.append(value.strip())
    return out[:MAX_SESSION_COOKIES]


def session_id(cookie_headers: list[str]) -> str | None:
    """The first session cookie's value from ``Cookie`` headers (None if absent)."""
    ids = session_ids(cookie_headers)
    return ids[0] if ids else None


def _query(h: Any) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(h.path).query).items()}


def _svc(h: Any) -> PageService:
    return h.api  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------
# the page and its session
# ------------------------------------------------------------------------------------------


def _static(h: Any, _body: bytes) -> None:
    name, ctype = STATIC_FILES[h._route_path()]
    try:
        data = (STATIC_DIR / name).read_bytes()
    except OSError as exc:
        raise HttpError(500, f"page: {name} is missing from the installation ({exc})") from None
    h.send_bytes(200, data, ctype, PAGE_HEADERS)


def _get_session(h: Any, _body: bytes) -> None:
    sessions: Sessions = h.sessions
    ok = not sessions.required or h._authorised()
    h.send_json(200, {"token_required": sessions.required, "authorised": ok})


def _post_login(h: Any, body: bytes) -> None:
    sessions: Sessions = h.sessions
    doc = load_json_body(body) if body.strip() else {}
    if not isinstance(doc, dict) or set(doc) - {"token"}:
        raise HttpError(400, 'body: expected {"token": "..."}', "body")
    if not sessions.required:
        h.send_json(200, {"token_required": False, "authorised": True})
        return
    h.guard_credential()  # 429 while backing off; never a sleep in this connection slot
    sid = sessions.login(doc.get("token"))
    h.record_credential(sid is not None)
    if sid is None:
        raise HttpError(401, "token: wrong token", "token")
    cookie = f"{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={int(SESSION_TTL_S)}"
    h.send_json(200, {"token_required": True, "authorised": True}, {"Set-Cookie": cookie})


def _post_logout(h: Any, _body: bytes) -> None:
    h.sessions.logout(h.headers.get_all("Cookie") or [])
    cookie = f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    h.send_json(200, {"authorised": False}, {"Set-Cookie": cookie})


# ------------------------------------------------------------------------------------------
# live frame and state
# ------------------------------------------------------------------------------------------


def _get_live(h: Any, _body: bytes) -> None:
    svc = _svc(h)
    now = svc.monotonic()
    svc.live.touch(now)
    entry, read_at = svc.live.latest()
    if entry is None:
        raise HttpError(503, "live: no frame read yet", "path", {"Retry-After": "1"})
    # what a page shows can be prompted: kept per viewer (tab), so another never evicts it
    kept = svc.prompt_cache.put(entry, shown=True, viewer=viewer_id(_query(h).get("viewer")))
    headers = {
        "X-Frame-Id": str(entry.frame_id),
        "X-Frame-Name": re.sub(r"[^\x20-\x7e]", "?", entry.name)[:200],
        "X-Frame-Age": f"{max(now - (read_at or now), 0.0):.3f}",
        "ETag": f'"{entry.frame_id}"',
    }
    if h.headers.get("If-None-Match") == headers["ETag"]:  # the page has this frame already
        h.send_bytes(304, b"", "image/jpeg", headers)
        return
    h.send_bytes(200, kept.jpeg(), "image/jpeg", headers)


_VIEWER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def viewer_id(value: str | None) -> str:
    """The page's viewer id (``?viewer=``), or the anonymous viewer for none or a bad one."""
    return value if value and _VIEWER_ID.match(value) else ANONYMOUS_VIEWER


def _get_state(h: Any, _body: bytes) -> None:
    h.send_json(200, _svc(h).page_facts())


# ------------------------------------------------------------------------------------------
# prompts on kept frames
# ------------------------------------------------------------------------------------------


def parse_prompt_body(raw: bytes) -> tuple[int | str, TriggerRequest]:
    """Validate a ``POST /prompt`` body.

    Returns:
        The frame id (an int or ``"latest"``) and the request (prompts, ``save`` default
        false, ``masks`` default true).

    Raises:
        HttpError: 400 naming the field.
    """
    body = load_json_object(raw, PROMPT_FIELDS)
    frame_id = body.get("frame_id", "latest")
    if frame_id != "latest" and (
        isinstance(frame_id, bool) or not isinstance(frame_id, int) or frame_id < 0
    ):
        raise HttpError(
            400, f'frame_id: expected a frame number or "latest", got {frame_id!r}', "frame_id"
        )
    flags = {}
    for key, default in (("save", False), ("masks", True)):
        value = body.get(key, default)
        if not isinstance(value, bool):
            raise HttpError(400, f"{key}: expected true or false, got {value!r}", key)
        flags[key] = value
    if body.get("prompt") in (None, [], {}):
        raise HttpError(400, "prompt: missing (a point, box or text prompt, or a list)", "prompt")
    prompts = parse_prompt_field(body["prompt"])
    req = TriggerRequest(
        prompt_json=body["prompt"], prompts=prompts, save=flags["save"], masks=flags["masks"]
    )
    return frame_id, req


def _post_prompt(h: Any, body: bytes) -> None:
    svc = _svc(h)
    frame_id, req = parse_prompt_body(body)
    if not isinstance(svc.segmenter, DetectsAndSelects):
        raise HttpError(
            501, "prompt: the loaded segmenter cannot prompt kept frames (no select())", "prompt"
        )
    cache = svc.prompt_cache
    if not cache.max_frames:
        raise HttpError(
            404, "frame_id: no frames are kept (http.prompt_cache_frames = 0)", "frame_id"
        )
    entry = cache.get(frame_id)
    if entry is None:
        if frame_id == "latest":
            raise HttpError(404, "frame_id: no segmented frame is kept yet", "frame_id")
        why = "was evicted" if cache.was_evicted(int(frame_id)) else "is not kept"
        kept = cache.frame_ids()
        raise HttpError(
            404,
            f"frame_id: frame {frame_id} {why} (kept: {kept}; "
            f"http.prompt_cache_frames = {cache.max_frames})",
            "frame_id",
        )
    acquire_busy(h)
    was_prompted, entry.prompted = entry.prompted, True  # kept while the answer is computed
    try:
        svc.submit_prompt(req, entry)
        await_request(h, req)
    finally:
        h.busy.release()
        if req.status != 200:  # a rejected prompt does not keep its frame longer
            entry.prompted = was_prompted
    h.send_json(req.status, req.response, req.headers)


# ------------------------------------------------------------------------------------------
# recent results
# ------------------------------------------------------------------------------------------


def recent_results(root: Path, limit: int = RECENT_RESULTS) -> list[dict[str, Any]]:
    """The newest result directories under ``root`` (names as the sink writes them)."""
    try:
        names = sorted(
            (e.name for e in root.iterdir() if RESULT_NAME.match(e.name) and e.is_dir()),
            reverse=True,
        )[:limit]
    except OSError:
        return []
    out = []
    for name in names:
        files = {}
        for kind, candidates in RESULT_FILES.items():
            found = next((f for f in candidates if (root / name / f).is_file()), None)
            if found:
                files[kind] = found
        entry: dict[str, Any] = {"name": name, "frame_id": result_frame_id(name), "files": files}
        if "json" in files:
            entry["summary"] = result_summary(root / name / files["json"])
        out.append(entry)
    return out


SUMMARIES = BoundedLRU[str, dict[str, Any]](
    256, 1 << 20, sizeof=lambda key, value: len(key) + len(json.dumps(value)) + 128
)
"""Summaries of recent results (``fastsam_cache_*{cache="summaries"}``): a result file is
parsed once, not at every poll of the page."""


def result_summary(path: Path) -> dict[str, Any] | None:
    """``num_masks`` and the masks per vocabulary word (``counts``, open vocabulary only) of a
    written result JSON; ``None`` when it cannot be read."""
    try:
        key = f"{path}:{path.stat().st_mtime_ns}"
    except OSError:
        return None
    hit = SUMMARIES.get(key)
    if hit is not None:
        return hit
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    summary: dict[str, Any] = {"num_masks": doc.get("num_masks")}
    counts = label_counts(doc)
    if counts is not None:
        summary["counts"] = counts
    SUMMARIES.put(key, summary)
    return summary


THUMBS = BoundedLRU[str, bytes](64, 4 << 20)
"""Thumbnails of recent results (``fastsam_cache_*{cache="thumbnails"}``)."""


def _thumbnail(path: Path) -> bytes:
    key = f"{path}:{path.stat().st_mtime_ns}"
    hit = THUMBS.get(key)
    if hit is not None:
        return hit
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise HttpError(404, f"file: cannot read {path.name}", "file")
    h, w = image.shape[:2]
    scale = THUMB_WIDTH / max(w, 1)
    small = cv2.resize(
        image, (THUMB_WIDTH, max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    data = encode_jpeg(small, 75)
    THUMBS.put(key, data)
    return data


def _get_results(h: Any, _body: bytes) -> None:
    h.send_json(200, {"results": recent_results(_svc(h).results_dir())})


def _get_result_file(h: Any, _body: bytes) -> None:
    q = _query(h)
    name, kind = q.get("name", ""), q.get("file", "json")
    if not RESULT_NAME.match(name):  # also stops any path traversal
        raise HttpError(400, f"name: not a result name: {name[:80]!r}", "name")
    root = _svc(h).results_dir()
    entry = next((r for r in recent_results(root, 10**9) if r["name"] == name), None)
    if entry is None:
        raise HttpError(404, f"name: no result {name!r}", "name")
    files = entry["files"]
    if kind == "thumb":
        source = files.get("overlay") or files.get("frame")
        if source is None:
            raise HttpError(404, f"file: result {name} has no image", "file")
        h.send_bytes(200, _thumbnail(root / name / source), "image/jpeg")
        return
    if kind not in ("json", "overlay", "frame"):
        raise HttpError(400, f"file: expected json, overlay, frame or thumb, got {kind!r}", "file")
    if kind not in files:
        raise HttpError(404, f"file: result {name} has no {kind} file", "file")
    path = root / name / files[kind]
    ctype = {".json": "application/json", ".jpg": "image/jpeg", ".png": "image/png"}[path.suffix]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HttpError(404, f"file: cannot read {files[kind]}: {exc.strerror}", "file") from None
    h.send_bytes(200, data, ctype)


def _get_event_thumb(h: Any, _body: bytes) -> None:
    raw = _query(h).get("seq", "")
    if not raw.isdigit() or len(raw) > 12:
        raise HttpError(400, f"seq: expected an event number, got {raw[:20]!r}", "seq")
    data = _svc(h).event_thumbnail(int(raw))
    if data is None:
        raise HttpError(404, f"seq: no thumbnail of event {raw} (no longer kept?)", "seq")
    h.send_bytes(200, data, "image/jpeg")


def page_routes() -> dict[str, dict[str, Route]]:
    """The page's routes, to merge into the API's route table."""
    routes: dict[str, dict[str, Route]] = {
        path: {"GET": Route(_static, public=True)} for path in STATIC_FILES
    }
    routes.update(
        {
            "/session": {"GET": Route(_get_session, public=True)},
            "/login": {"POST": Route(_post_login, public=True)},
            "/logout": {"POST": Route(_post_logout, public=True)},
            "/live.jpg": {"GET": Route(_get_live)},
            "/state": {"GET": Route(_get_state)},
            "/prompt": {"POST": Route(_post_prompt)},
            "/results": {"GET": Route(_get_results)},
            "/results/file": {"GET": Route(_get_result_file)},
            "/events/thumb": {"GET": Route(_get_event_thumb)},
        }
    )
    return routes


def frame_facts(entry: CachedFrame | None, read_at: float | None, now: float) -> Any:
    """JSON facts of a frame for :func:`_get_state`."""
    if entry is None:
        return None
    h, w = entry.image.shape[:2]
    return {
        "frame_id": entry.frame_id,
        "name": entry.name,
        "width": w,
        "height": h,
        "age_s": round(max(now - read_at, 0.0), 3) if read_at is not None else None,
    }
