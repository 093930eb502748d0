"""The page's endpoints (edge.service.web): the page, login sessions, the live frame, prompts
on kept frames (no detector run), recent results; the service's protections apply to them."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.demo.scenes import generate_scene
from edge.encode import decode_rle
from edge.service.config import demo_config
from edge.service.http import HttpError
from edge.service.runner import Service
from edge.service.web import (
    COOKIE,
    Sessions,
    parse_prompt_body,
    recent_results,
    session_id,
    session_ids,
)

WAIT = 60.0
TOKEN = "s3cret-token-0123"
W, H = 320, 240
SEED = 1_000_500


class CountingSegmenter:
    """The demo segmenter, counting detector runs."""

    def __init__(self, seg) -> None:  # noqa: ANN001
        self.seg, self.detects = seg, 0
        self.manifest, self.precision = seg.manifest, seg.precision

    def detect(self, image, **kwargs):  # noqa: ANN001, ANN003, ANN201
        self.detects += 1
        return self.seg.detect(image, **kwargs)

    def select(self, dets, prompt=None):  # noqa: ANN001, ANN201
        return self.seg.select(dets, prompt)

    def segment(self, image, prompt=None, **kwargs):  # noqa: ANN001, ANN003, ANN201
        return self.select(self.detect(image, **kwargs), prompt)


@pytest.fixture(scope="module")
def svc(tmp_path_factory, demo_bundle):
    from edge.segmenter import Segmenter

    seg = CountingSegmenter(Segmenter.load(demo_bundle, threads=1))
    cfg = demo_config(
        tmp_path_factory.mktemp("web") / "out",
        **{
            "source.width": W,
            "source.height": H,
            "source.seed": SEED,
            "source.count": 5,
            "source.loop": True,
            "source.realtime": True,
            "source.fps": 30.0,
            "trigger.interval.enabled": False,
            "http.enabled": True,
            "http.port": 0,
            "http.token": TOKEN,
            "http.prompt_cache_frames": 3,
            "http.live_fps": 10.0,
            "model.warmup": False,
        },
    )
    service = Service(cfg, segmenter=seg)
    thread = threading.Thread(target=service.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    assert service.ready.wait(WAIT)
    yield service
    service.request_stop("test")
    thread.join(WAIT)
    assert not thread.is_alive()


def _req(
    svc: Service,
    method: str,
    path: str,
    body: object = None,
    headers: dict | None = None,
    auth: bool = True,
) -> tuple[int, object, dict]:
    hdrs = {"Host": "127.0.0.1"}
    if auth:
        hdrs["Authorization"] = f"Bearer {TOKEN}"
    raw = None
    if body is not None or method == "POST":
        raw = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", svc.http.port, timeout=WAIT)
    try:
        conn.request(method, path, body=raw, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type", "")
        out: object = json.loads(data) if ctype.startswith("application/json") else data
        return resp.status, out, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def _live(svc: Service) -> tuple[int, str, np.ndarray]:
    status, data, headers = _req(svc, "GET", "/live.jpg")
    for _ in range(50):  # the first frame comes with the first read
        if status == 200:
            break
        time.sleep(0.1)
        status, data, headers = _req(svc, "GET", "/live.jpg")
    assert status == 200, data
    assert headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return int(headers["x-frame-id"]), headers["x-frame-name"], image


def _unprompted_live(svc: Service) -> int:
    """A live frame no earlier test prompted (those are kept longer)."""
    frame_id = _live(svc)[0]
    while svc.prompt_cache.get(frame_id).prompted:
        time.sleep(0.05)
        frame_id = _live(svc)[0]
    return frame_id


def _inside(mask: np.ndarray) -> tuple[int, int]:
    """The pixel of ``mask`` farthest from its border (x, y)."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ------------------------------------------------------------------------------------------
# pure parts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        (b"[1]", "body", 400),
        (b'{"prompt": {"type": "point", "data": [1, 1]}, "frame": 3}', "frame", 400),
        (b'{"frame_id": -1, "prompt": {"type": "box", "data": [0, 0, 5, 5]}}', "frame_id", 400),
        (b'{"frame_id": true, "prompt": {"type": "box", "data": [0, 0, 5, 5]}}', "frame_id", 400),
        (b'{"frame_id": "3", "prompt": {"type": "box", "data": [0, 0, 5, 5]}}', "frame_id", 400),
        (b'{"frame_id": 3}', "prompt", 400),
        (b'{"frame_id": 3, "prompt": []}', "prompt", 400),
        (b'{"frame_id": 3, "prompt": {"type": "box", "data": [5, 5, 1, 1]}}', "prompt", 400),
        (b'{"prompt": {"type": "box", "data": [0, 0, 5, 5]}, "save": 1}', "save", 400),
        (b'{"prompt": {"type": "box", "data": [0, 0, 5, 5]}, "masks": "no"}', "masks", 400),
    ],
)
def test_prompt_body_errors_name_the_field(body: bytes, field: str, status: int) -> None:
    with pytest.raises(HttpError) as err:
        parse_prompt_body(body)
    assert err.value.status == status and err.value.field == field, err.value.message


def test_prompt_body_defaults() -> None:
    frame_id, req = parse_prompt_body(b'{"prompt": {"type": "text", "data": "a red circle"}}')
    assert frame_id == "latest" and req.save is False and req.masks is True
    assert req.prompt_json == {"type": "text", "data": "a red circle"}
    frame_id, req = parse_prompt_body(
        b'{"frame_id": 12, "prompt": [{"type": "point", "data": [3, 4]}], "save": true}'
    )
    assert frame_id == 12 and req.save and len(req.prompts) == 1


@pytest.mark.parametrize(
    ("headers", "sid"),
    [
        ([], None),
        ([f"{COOKIE}=abc"], "abc"),
        ([f"other=1; {COOKIE}=xyz; more=2"], "xyz"),
        (["other=1", f"{COOKIE}=q"], "q"),
        ([f"{COOKIE}="], None),
        ([f"x{COOKIE}=no"], None),
    ],
)
def test_session_cookie_parsing(headers: list[str], sid: str | None) -> None:
    assert session_id(headers) == sid


def test_any_valid_session_cookie_among_several_is_accepted() -> None:
    sessions = Sessions(TOKEN)
    sid = sessions.login(TOKEN)
    assert sid is not None
    stale = "x" * len(sid)  # e.g. left by an earlier run of the service on another port
    assert session_ids([f"{COOKIE}={stale}; other=1; {COOKIE}={sid}"]) == [stale, sid]
    for headers in (
        [f"{COOKIE}={stale}; {COOKIE}={sid}"],
        [f"{COOKIE}={stale}", f"{COOKIE}={sid}"],
    ):
        assert sessions.valid(headers)
    assert not sessions.valid([f"{COOKIE}={stale}; {COOKIE}=y"])
    sessions.logout([f"{COOKIE}={stale}; {COOKIE}={sid}"])
    assert not sessions.valid([f"{COOKIE}={sid}"])
    from edge.service.web import MAX_SESSIONS

    for _ in range(MAX_SESSIONS + 10):  # logins are bounded too (and need the token)
        sessions.login(TOKEN)
    st = sessions.stats()
    assert st["entries"] == MAX_SESSIONS and st["evictions"] == 10
    assert st["bytes"] <= st["max_bytes"]


def test_sessions_login_check_logout() -> None:
    sessions = Sessions("tok")
    assert sessions.required and sessions.login("wrong") is None and sessions.login(None) is None
    sid = sessions.login("tok")
    assert sid and len(sid) >= 40
    assert sessions.valid([f"{COOKIE}={sid}"]) and not sessions.valid([f"{COOKIE}=x{sid}"])
    sessions.logout([f"{COOKIE}={sid}"])
    assert not sessions.valid([f"{COOKIE}={sid}"])
    assert Sessions("").login("") is None and not Sessions("").required


def test_recent_results_lists_only_result_directories(tmp_path: Path) -> None:
    names = ["20261125T130102.123Z_00000042", "20261125T130103.000Z_00000043"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text("{}")
    (tmp_path / names[1] / "overlay.jpg").write_bytes(b"x")
    (tmp_path / ".partial-20261125T130104.000Z_00000044").mkdir()
    (tmp_path / "notes").mkdir()
    got = recent_results(tmp_path)
    assert [r["name"] for r in got] == names[::-1]
    assert got[0]["files"] == {"json": "result.json", "overlay": "overlay.jpg"}
    assert got[0]["frame_id"] == 43
    assert recent_results(tmp_path / "missing") == []
    assert len(recent_results(tmp_path, limit=1)) == 1


# ------------------------------------------------------------------------------------------
# through the running service
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/app.css"])
def test_page_files_are_public_and_locked_down(svc: Service, path: str) -> None:
    status, data, headers = _req(svc, "GET", path, auth=False)
    assert status == 200 and len(data) > 500
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    if path == "/":
        assert headers["content-type"].startswith("text/html")
        assert b'src="/static/app.js"' in data and b"http://" not in data
        assert b"https://" not in data  # nothing from a CDN


@pytest.mark.parametrize(
    "path", ["/state", "/live.jpg", "/results", "/latest", f"/live.jpg?token={TOKEN}"]
)
def test_data_needs_the_token_or_a_session(svc: Service, path: str) -> None:
    status, body, _ = _req(svc, "GET", path, auth=False)
    assert status == 401, body  # a token in the URL is not a credential


def test_login_sets_an_httponly_strict_cookie_that_authorises(svc: Service) -> None:
    status, body, _ = _req(svc, "GET", "/session", auth=False)
    assert status == 200 and body == {"token_required": True, "authorised": False}
    status, body, _ = _req(svc, "POST", "/login", {"token": "wrong"}, auth=False)
    assert status == 401 and body["field"] == "token"
    status, body, _ = _req(
        svc,
        "POST",
        "/login",
        json.dumps({"token": TOKEN}).encode(),
        {"Content-Type": "text/plain"},
        auth=False,
    )
    assert status == 415, body  # a cross-site form cannot log in either
    status, body, headers = _req(svc, "POST", "/login", {"token": TOKEN}, auth=False)
    assert status == 200 and body["authorised"]
    cookie = headers["set-cookie"]
    attrs = [a.strip() for a in cookie.split(";")]
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs and "Path=/" in attrs
    assert TOKEN not in cookie
    jar = {"Cookie": attrs[0]}
    status, body, _ = _req(svc, "GET", "/state", headers=jar, auth=False)
    assert status == 200 and body["prompt_cache"]["limit_bytes"] == 64 * 2**20
    status, body, _ = _req(svc, "GET", "/session", headers=jar, auth=False)
    assert body["authorised"]
    status, _, headers = _req(svc, "POST", "/logout", headers=jar, auth=False)
    assert status == 200 and "Max-Age=0" in headers["set-cookie"]
    status, _, _ = _req(svc, "GET", "/state", headers=jar, auth=False)
    assert status == 401


def test_host_check_applies_to_the_page(svc: Service) -> None:
    status, body, _ = _req(svc, "GET", "/", headers={"Host": "evil.example"}, auth=False)
    assert status == 421, body


def test_live_frame_is_read_only_while_watched(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge.service.live

    frame_id, name, image = _live(svc)
    assert image.shape == (H, W, 3)
    seed = int(name.split("_")[1])
    truth = generate_scene(seed, W, H).image
    assert np.abs(image.astype(int) - truth).mean() < 6  # JPEG of the frame the name says
    monkeypatch.setattr(edge.service.live, "VIEWER_TTL_S", 1.0)
    before, t0 = svc.metrics.get("fastsam_frames_total"), time.monotonic()
    _live(svc)  # watching for 1 s more
    time.sleep(1.5)
    read = svc.metrics.get("fastsam_frames_total") - before
    # http.live_fps = 10 while watched, nothing else reads (no trigger configured)
    assert 2 <= read <= (time.monotonic() - t0) * 10 + 2, read
    idle = svc.metrics.get("fastsam_frames_total")
    time.sleep(1.0)
    assert svc.metrics.get("fastsam_frames_total") - idle <= 1  # nobody watching: no reads


def test_prompt_on_the_shown_frame_runs_the_detector_once(svc: Service) -> None:
    frame_id, name, _ = _live(svc)
    scene = generate_scene(int(name.split("_")[1]), W, H)
    k = int(np.argmax(scene.masks.sum(axis=(1, 2))))
    x, y = _inside(scene.masks[k])
    detects = svc.segmenter.detects
    body = {"frame_id": frame_id, "prompt": {"type": "point", "data": [x, y], "mode": "best"}}
    status, doc, _ = _req(svc, "POST", "/prompt", body)
    assert status == 200, doc
    assert doc["frame_id"] == frame_id and doc["trigger"] == "prompt" and doc["num_masks"] == 1
    mask = decode_rle(doc["masks"][0]["rle"])
    assert mask[y, x] and _iou(mask, scene.masks[k]) >= 0.8
    assert svc.segmenter.detects == detects + 1  # shown, not segmented yet: detected once
    box = [float(v) for v in scene.xyxy[k]]
    status, doc2, _ = _req(
        svc, "POST", "/prompt", {"frame_id": frame_id, "prompt": {"type": "box", "data": box}}
    )
    assert status == 200 and doc2["masks"][0]["prompt_index"] == 0
    assert svc.segmenter.detects == detects + 1  # answered from the kept detections
    assert "result_dir" not in doc2  # save defaults to false
    status, doc3, _ = _req(svc, "POST", "/prompt", {**body, "frame_id": "latest"})
    assert status == 200 and doc3["frame_id"] == frame_id


def test_prompt_errors(svc: Service) -> None:
    frame_id = _unprompted_live(svc)
    point = {"type": "point", "data": [5, 5]}
    status, body, _ = _req(svc, "POST", "/prompt", {"frame_id": 10**9, "prompt": point})
    assert status == 404 and "frame 1000000000 is not kept" in body["error"]
    status, body, _ = _req(
        svc, "POST", "/prompt", {"frame_id": frame_id, "prompt": {"type": "point", "data": [W, 5]}}
    )
    assert status == 400 and body["field"] == "prompt" and "off the" in body["error"]
    assert not svc.prompt_cache.get(frame_id).prompted  # a rejected prompt pins nothing
    status, body, _ = _req(
        svc,
        "POST",
        "/prompt",
        json.dumps({"prompt": point}).encode(),
        {"Content-Type": "text/plain"},
    )
    assert status == 415
    status, body, _ = _req(svc, "GET", "/prompt")
    assert status == 405


def test_kept_frames_are_bounded_evicted_frames_named(svc: Service) -> None:
    first = _unprompted_live(svc)
    for _ in range(5):  # triggered frames nobody looked at go first
        status, doc, _ = _req(svc, "POST", "/trigger", {"save": False, "masks": False})
        assert status == 200 and doc["frame_id"] != first
        assert len(svc.prompt_cache) <= 3 and first in svc.prompt_cache.frame_ids()
    shown = {first}
    while len(shown) < 4:  # then the oldest frame a page showed
        shown.add(_live(svc)[0])
        time.sleep(0.05)
    status, body, _ = _req(
        svc, "POST", "/prompt", {"frame_id": first, "prompt": {"type": "point", "data": [1, 1]}}
    )
    assert status == 404 and f"frame {first} was evicted" in body["error"], body
    assert body["field"] == "frame_id"
    status, text, _ = _req(svc, "GET", "/metrics")
    metrics = dict(
        line.rsplit(" ", 1) for line in text.decode().splitlines() if line.startswith("fastsam_p")
    )
    assert 0 < float(metrics["fastsam_prompt_cache_bytes"]) <= 64 * 2**20
    assert float(metrics["fastsam_prompt_cache_frames"]) <= 3
    assert float(metrics["fastsam_prompt_cache_limit_bytes"]) == 64 * 2**20


def test_saved_prompt_result_is_listed_with_files(svc: Service) -> None:
    frame_id, _, _ = _live(svc)
    body = {"frame_id": frame_id, "prompt": {"type": "box", "data": [0, 0, W / 2, H / 2]}}
    status, doc, _ = _req(svc, "POST", "/prompt", {**body, "save": True})
    assert status == 200 and doc["result_dir"], doc
    name = Path(doc["result_dir"]).name
    status, listing, _ = _req(svc, "GET", "/results")
    assert status == 200 and listing["results"][0]["name"] == name
    status, saved, _ = _req(svc, "GET", f"/results/file?name={name}&file=json")
    assert status == 200 and saved["frame_id"] == frame_id and saved["trigger"] == "prompt"
    status, thumb, headers = _req(svc, "GET", f"/results/file?name={name}&file=thumb")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    small = cv2.imdecode(np.frombuffer(thumb, np.uint8), cv2.IMREAD_COLOR)
    assert small.shape[1] == 160
    status, data, _ = _req(svc, "GET", f"/results/file?name={name}&file=overlay")
    assert status == 200 and len(data) > 100
    for query, code in [
        ("name=../../etc&file=json", 400),
        (f"name={name}&file=../../x", 400),
        ("name=20000101T000000.000Z_00000001&file=json", 404),
        (f"name={name}&file=frame", 404),  # output.frame is off
    ]:
        status, body, _ = _req(svc, "GET", f"/results/file?{query}")
        assert status == code, (query, body)


def test_state_tells_the_page_what_it_needs(svc: Service) -> None:
    _live(svc)
    status, state, _ = _req(svc, "GET", "/state")
    assert status == 200
    assert state["live"]["width"] == W and state["live"]["name"].startswith("scene_")
    assert state["source"]["open"] and state["live_reads"]
    assert state["bundle"]["name"] and isinstance(state["text_prompts"], bool)
    assert state["prompt_cache"]["limit_bytes"] == 64 * 2**20


def test_state_and_live_frame_when_the_source_is_down(tmp_path: Path) -> None:
    """What the page's "Source down" and "No frame yet" banners read."""
    from fakes import FakeSegmenter, FlakySource

    from edge.service.sources import DemoSource

    source = FlakySource(DemoSource(SEED, 2, W, H, loop=True, live=True), open_failures=10**6)
    cfg = demo_config(
        tmp_path / "out",
        **{
            "trigger.interval.enabled": False,
            "http.enabled": True,
            "http.port": 0,
            "source.reopen_backoff_s": 0.05,
            "source.reopen_backoff_max_s": 0.05,
            "model.warmup": False,
        },
    )
    down = Service(cfg, segmenter=FakeSegmenter(), source=source)
    thread = threading.Thread(target=down.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        assert down.ready.wait(WAIT)
        status, state, _ = _req(down, "GET", "/state", auth=False)
        assert status == 200
        assert state["source"]["open"] is False and "camera busy" in state["source"]["error"]
        assert state["live"] is None and state["latest"] is None and state["stalled_s"] is None
        assert state["text_prompts"] is False  # the fake segmenter has no CLIP
        status, body, headers = _req(down, "GET", "/live.jpg", auth=False)
        assert status == 503 and "no frame read yet" in body["error"]
        assert headers["retry-after"] == "1"
        status, body, _ = _req(
            down, "POST", "/prompt", {"prompt": {"type": "point", "data": [1, 1]}}, auth=False
        )
        assert status == 501 and body["field"] == "prompt"  # FakeSegmenter cannot select()
    finally:
        down.request_stop("test")
        thread.join(WAIT)


def test_live_frame_the_page_has_is_a_304(svc: Service) -> None:
    frame_id, _, _ = _live(svc)
    status, data, headers = _req(
        svc, "GET", "/live.jpg", headers={"If-None-Match": f'"{frame_id}"'}
    )
    if int(headers["x-frame-id"]) == frame_id:
        assert status == 304 and data == b"" and headers["etag"] == f'"{frame_id}"'
    else:  # a newer frame was read meanwhile
        assert status == 200 and data[:2] == b"\xff\xd8"
    status, data, headers = _req(svc, "GET", "/live.jpg", headers={"If-None-Match": '"-1"'})
    assert status == 200 and data[:2] == b"\xff\xd8" and headers["etag"].strip('"').isdigit()


def _lan_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_page_on_a_lan_address_with_a_token(tmp_path: Path) -> None:
    """http.host = 0.0.0.0 with a token: the page is served on the machine's address (and its
    host name), its data only after login, to no other Host name."""
    import socket

    from fakes import FakeSegmenter

    cfg = demo_config(
        tmp_path / "out",
        **{
            "source.width": W,
            "source.height": H,
            "trigger.interval.enabled": False,
            "http.enabled": True,
            "http.host": "0.0.0.0",
            "http.port": 0,
            "http.token": TOKEN,
            "model.warmup": False,
        },
    )
    lan = Service(cfg, segmenter=FakeSegmenter())
    thread = threading.Thread(target=lan.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    addr = _lan_address() or "127.0.0.1"
    hostname = socket.gethostname().split(".")[0]
    try:
        assert lan.ready.wait(WAIT)

        def get(path: str, host: str, headers: dict | None = None) -> tuple[int, dict]:
            conn = http.client.HTTPConnection(addr, lan.http.port, timeout=WAIT)
            try:
                conn.request("GET", path, headers={"Host": host, **(headers or {})})
                resp = conn.getresponse()
                resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}
            finally:
                conn.close()

        for host in (f"{addr}:{lan.http.port}", f"{hostname}.local:{lan.http.port}"):
            assert get("/", host)[0] == 200, host
            assert get("/state", host)[0] == 401, host
        assert get("/", "attacker.example")[0] == 421
        conn = http.client.HTTPConnection(addr, lan.http.port, timeout=WAIT)
        conn.request(
            "POST",
            "/login",
            json.dumps({"token": TOKEN}),
            {"Host": addr, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 200
        cookie = resp.getheader("Set-Cookie").split(";")[0]
        assert get("/state", addr, {"Cookie": cookie})[0] == 200
        assert get("/state", "attacker.example", {"Cookie": cookie})[0] == 421
    finally:
        lan.request_stop("test")
        thread.join(WAIT)


# --------------------------------------------------------------------------------------------
# text prompts without the tokenizer packages; a client's bad request is not a service error
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/trigger", "/prompt"])
def test_text_prompt_without_the_tokenizer_is_a_400_naming_prompt_before_segmenting(
    svc: Service, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    import edge.tokenizer

    monkeypatch.setattr(edge.tokenizer, "missing_text_deps", lambda: ["ftfy", "regex"])
    body: dict = {"prompt": {"type": "text", "data": "a red circle"}}
    if path == "/prompt":
        body["frame_id"] = _unprompted_live(svc)
    errors, detects = svc.metrics.get("fastsam_errors_total"), svc.segmenter.detects
    status, out, _ = _req(svc, "POST", path, body)
    assert status == 400 and out["field"] == "prompt", out
    assert "ftfy, regex" in out["error"] and "pip install ftfy regex" in out["error"]
    assert svc.segmenter.detects == detects  # refused before any segmentation
    assert svc.metrics.get("fastsam_errors_total") == errors
    status, state, _ = _req(svc, "GET", "/state")
    assert state["text_prompts"] is False and "ftfy" in state["text_prompts_why"]
    monkeypatch.undo()
    status, state, _ = _req(svc, "GET", "/state")
    assert state["text_prompts"] is True and state["text_prompts_why"] == ""


def test_a_bad_prompt_is_answered_400_and_not_counted_as_an_error(svc: Service) -> None:
    errors = svc.metrics.get("fastsam_errors_total")
    status, out, _ = _req(svc, "POST", "/trigger", {"prompt": {"type": "point", "data": [9e3, 1]}})
    assert status == 400 and out["field"] == "prompt", out
    assert svc.metrics.get("fastsam_errors_total") == errors


def test_wrong_logins_share_the_throttle_and_never_sleep(tmp_path, monkeypatch) -> None:
    from fakes import FakeSegmenter

    import edge.service.web as web
    from edge.service.http import AUTH_FREE_FAILURES

    def no_sleep(_s: float) -> None:
        raise AssertionError("a handler slept in its connection slot")

    monkeypatch.setattr(web.time, "sleep", no_sleep)
    cfg = demo_config(
        tmp_path / "out",
        **{
            "source.width": W,
            "source.height": H,
            "trigger.interval.enabled": False,
            "http.enabled": True,
            "http.port": 0,
            "http.token": TOKEN,
            "model.warmup": False,
        },
    )
    one = Service(cfg, segmenter=FakeSegmenter())
    thread = threading.Thread(target=one.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        assert one.ready.wait(WAIT)
        statuses = [
            _req(one, "POST", "/login", {"token": f"guess-{i}"}, auth=False)[0] for i in range(8)
        ]
        assert statuses == [401] * AUTH_FREE_FAILURES + [429] * (8 - AUTH_FREE_FAILURES)
        # the same throttle guards the bearer token, and the right token waits too
        assert _req(one, "GET", "/state")[0] == 429
        status, body, headers = _req(one, "POST", "/login", {"token": TOKEN}, auth=False)
        assert status == 429 and body["field"] == "authorization" and "retry-after" in headers
        assert _req(one, "GET", "/healthz", auth=False)[0] == 200
    finally:
        one.request_stop("test")
        thread.join(WAIT)


def test_saving_a_prompt_on_a_segmented_frame_keeps_both_results(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge.service.sink as sink_mod

    status, trig, _ = _req(svc, "POST", "/trigger", {"masks": False})  # saved: has a result
    assert status == 200 and trig["result_dir"], trig
    frame_id = trig["frame_id"]
    body = {"frame_id": frame_id, "prompt": {"type": "box", "data": [0, 0, W / 2, H / 2]}}
    names = []
    for _ in range(2):
        status, doc, _ = _req(svc, "POST", "/prompt", {**body, "save": True})
        assert status == 200 and doc.get("files") and "save_error" not in doc, doc
        names.append(Path(doc["result_dir"]).name)
    own = Path(trig["result_dir"]).name
    assert names == [f"{own}_p1", f"{own}_p2"]
    assert all((Path(trig["result_dir"]).parent / n / "result.json").is_file() for n in names)
    assert _req(svc, "GET", "/healthz", auth=False)[0] == 200  # not degraded
    listing = _req(svc, "GET", "/results")[1]["results"]
    assert {r["name"] for r in listing} >= {own, *names}
    assert all(r["frame_id"] == frame_id for r in listing if r["name"].startswith(own))

    def full(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sink_mod, "atomic_write_bytes", full)
    status, doc, _ = _req(svc, "POST", "/prompt", {**body, "save": True, "masks": False})
    assert status == 200 and "ENOSPC" in doc["save_error"] and "files" not in doc
    monkeypatch.undo()
    svc.sink.write_error = None  # the disk "is freed": the next write would clear it too


def test_a_second_viewer_does_not_evict_the_paused_frame_of_the_first(svc: Service) -> None:
    def live(viewer: str) -> int:
        for _ in range(50):  # the first frame comes with the first read
            status, data, headers = _req(svc, "GET", f"/live.jpg?viewer={viewer}")
            if status == 200:
                return int(headers["x-frame-id"])
            time.sleep(0.1)
        raise AssertionError(data)

    paused = live("tab-a")  # the first page shows this frame and the user pauses on it
    seen = {paused}
    for _ in range(8):  # a monitor polls the live JPEG; frames are segmented meanwhile
        time.sleep(0.12)  # http.live_fps = 10: a new frame each time
        seen.add(live("monitor"))
        assert _req(svc, "POST", "/trigger", {"save": False, "masks": False})[0] == 200
    assert len(seen) > 3  # more frames than http.prompt_cache_frames went by
    body = {"frame_id": paused, "prompt": {"type": "box", "data": [0, 0, W / 2, H / 2]}}
    status, doc, _ = _req(svc, "POST", "/prompt", body)
    assert status == 200 and doc["frame_id"] == paused, doc
    text = _req(svc, "GET", "/metrics")[1].decode()
    assert 'fastsam_cache_entries{cache="viewers"}' in text


def test_the_page_sends_its_viewer_id() -> None:
    from edge.service.web import STATIC_DIR, viewer_id

    assert "/live.jpg?viewer=${VIEWER}" in (STATIC_DIR / "app.js").read_text()
    assert viewer_id("0123abcd") == "0123abcd"
    assert viewer_id("../x") == viewer_id(None) == viewer_id("x" * 65) == "-"
