// fastsam-edge page: live view, status, recent results and prompts on the shown frame.
// Plain JavaScript, no dependencies. Every request goes to this server; the session cookie
// (HttpOnly, SameSite=Strict) is sent by the browser, POST bodies are JSON.
"use strict";

const LIVE_INTERVAL_MS = 500; // >= 1 Hz while the page is open (server: http.live_fps)
const STATE_INTERVAL_MS = 1000;
const STATUS_INTERVAL_MS = 2000;
const RESULTS_INTERVAL_MS = 5000;
const DRAG_PX = 6; // a pointer moving further than this is a box, not a click
// this tab's id: the server keeps the frames it showed this tab (not another tab's) for prompts
const VIEWER = Array.from(crypto.getRandomValues(new Uint8Array(8)),
  (b) => b.toString(16).padStart(2, "0")).join("");
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
  "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000"];

// Everything the page knows; tests read it (window.fastsam.state).
const state = {
  authorised: false,
  tokenRequired: false,
  live: null,          // {frameId, name, width, height} of the image shown
  frozen: null,        // {frameId, name} while prompting on a shown frame
  latest: null,        // last result JSON (masks drawn over the live view)
  server: null,        // last GET /state
  points: [],          // [{x, y, label}] of the frozen frame
  boxes: [],           // [[x1, y1, x2, y2]]
  texts: [],           // ["a red circle"]
  selection: null,     // last POST /prompt answer
  vocabulary: null,    // GET /state's vocabulary facts (kind, family, words, counts...)
  vocabEdited: false,  // the box holds the user's unsent words: polls leave it alone
  drawLog: [],         // [{image, masks}]: frame ids of the image and of the masks drawn on it
  lastRequest: null,   // last POST /prompt body
  message: "",
  errors: 0,
};
window.fastsam = { state };

const $ = (id) => document.getElementById(id);
const img = $("live");
const canvas = $("overlay");
const ctx = canvas.getContext("2d");
let liveUrl = null;
let drag = null;
let prevFrames = null;

// ---------------------------------------------------------------------------------------
// requests
// ---------------------------------------------------------------------------------------

class HttpFailure extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", body, raw = false, headers = {} } = {}) {
  const opts = { method, cache: "no-store", credentials: "same-origin", headers: { ...headers } };
  if (method === "POST") {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body === undefined ? {} : body);
  }
  const res = await fetch(path, opts);
  if (res.status === 401 && state.tokenRequired) {
    showLogin();
  }
  if (raw) {
    if (!res.ok && res.status !== 304) {
      throw new HttpFailure(res.status, await res.json().catch(() => null));
    }
    return res;
  }
  const type = res.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok && !(path === "/healthz" && res.status === 503)) throw new HttpFailure(res.status, data);
  return data;
}

function setMessage(text, isError = false) {
  state.message = text;
  const el = $("message");
  el.textContent = text;
  el.className = isError ? "error" : "muted";
}

// ---------------------------------------------------------------------------------------
// login
// ---------------------------------------------------------------------------------------

function showLogin() {
  state.authorised = false;
  $("login").hidden = false;
  $("app").hidden = true;
  $("token").focus();
}

function showApp() {
  state.authorised = true;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = !state.tokenRequired;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = $("login-error");
  err.hidden = true;
  try {
    await api("/login", { method: "POST", body: { token: $("token").value } });
    $("token").value = "";
    showApp();
    tick();
  } catch (e) {
    err.textContent = e.status === 401 ? "Wrong token." : `Login failed: ${e.message}`;
    err.hidden = false;
  }
});

$("logout").addEventListener("click", async () => {
  await api("/logout", { method: "POST" }).catch(() => {});
  showLogin();
});

// ---------------------------------------------------------------------------------------
// live view
// ---------------------------------------------------------------------------------------

async function pollLive() {
  if (state.authorised && !state.frozen && !document.hidden) {
    try {
      // the frame shown is sent as If-None-Match: an unchanged frame costs a 304, no JPEG
      const headers = state.live ? { "If-None-Match": `"${state.live.frameId}"` } : {};
      const res = await api(`/live.jpg?viewer=${VIEWER}`, { raw: true, headers });
      const frameId = Number(res.headers.get("X-Frame-Id"));
      const name = res.headers.get("X-Frame-Name") || "";
      if (res.status === 200 && !state.frozen) {
        const blob = await res.blob();
        const url = URL.createObjectURL(blob);
        await new Promise((resolve) => {
          img.onload = () => {
            img.dataset.frameId = String(frameId); // the id of the pixels now in <img>
            resolve();
          };
          img.onerror = resolve;
          img.src = url;
        });
        if (liveUrl) URL.revokeObjectURL(liveUrl);
        liveUrl = url;
        state.live = { frameId, name, width: img.naturalWidth, height: img.naturalHeight };
        draw();
        updateCaption();
      }
    } catch (e) {
      if (e.status !== 401) state.liveError = e.message;
    }
  }
  setTimeout(pollLive, LIVE_INTERVAL_MS);
}

async function pollState() {
  if (state.authorised) {
    try {
      const s = await api("/state");
      state.server = s;
      // without text support the box stays, disabled, with the reason beside it
      $("text").disabled = $("text-form").querySelector("button").disabled = !s.text_prompts;
      $("text-why").hidden = !!s.text_prompts;
      $("text-why").textContent = s.text_prompts ? "" : `Text prompts unavailable: ${s.text_prompts_why}`;
      renderVocabulary(s.vocabulary);
      const latest = s.latest;
      const have = state.latest;
      if (latest && (!have || have.frame_id !== latest.frame_id || have.timestamp !== latest.timestamp)) {
        const doc = await api("/latest");
        // an answer that arrived meanwhile ("Trigger now") may be newer than this one
        if (!state.latest || doc.timestamp >= state.latest.timestamp) state.latest = doc;
        draw();
      }
      renderEvents(s);
      updateBanner();
      updateCaption();
    } catch (e) {
      if (e.status !== 401) updateBanner(`Service unreachable: ${e.message}`);
    }
  }
  // a newer live frame is probably being segmented: look for its result sooner
  const pending = state.live && state.latest && state.live.frameId > state.latest.frame_id;
  setTimeout(pollState, pending ? STATE_INTERVAL_MS / 4 : STATE_INTERVAL_MS);
}

function updateBanner(override) {
  const el = $("banner");
  const s = state.server;
  let text = override || "";
  let kind = "bad";
  if (!text && s) {
    if (!s.source.open && s.source.error) {
      const stream = (s.source.name || "").startsWith("stream:");
      text = `${stream ? "Stream down" : "Source down"}: ${s.source.error}`;
    } else if (s.stalled_s !== null && s.stalled_s !== undefined) {
      text = `Segmentation stalled for ${Math.round(s.stalled_s)} s`;
    } else if (s.live && s.live_reads && s.live.age_s > 5) {
      text = `Live view stalled: no new frame for ${Math.round(s.live.age_s)} s`;
      kind = "warn";
    } else if (!s.live) {
      text = "No frame from the source yet";
      kind = "warn";
    } else if (!s.latest) {
      text = "No segmentation yet: press “Trigger now” or click the frame";
      kind = "info";
    }
  }
  el.textContent = text;
  el.className = `banner ${kind}`;
  el.hidden = !text;
  el.dataset.state = text ? text.split(":")[0] : "";
}

function updateCaption() {
  const parts = [];
  if (state.frozen) {
    parts.push(`frozen on frame ${state.frozen.frameId} (${state.frozen.name})`);
    const sel = state.selection;
    if (sel) parts.push(`${sel.num_masks} selected mask(s)`);
  } else if (state.live) {
    parts.push(`live frame ${state.live.frameId} (${state.live.name})`);
  }
  const l = state.latest;
  if (l && !state.frozen) {
    const age = l.timestamp ? Math.max(0, (Date.now() - Date.parse(l.timestamp)) / 1000) : null;
    const lat = state.server && state.server.latest ? state.server.latest.latency_ms : null;
    const behind = state.live ? state.live.frameId - l.frame_id : 0;
    parts.push(`masks of frame ${l.frame_id}` +
      (behind > 0 ? ` (${behind} frame(s) older: shown over their own frame only)` : "") +
      `: ${l.num_masks} mask(s)` +
      (lat !== null && lat !== undefined ? `, latency ${Math.round(lat)} ms` : "") +
      (age !== null ? `, ${age.toFixed(1)} s ago` : ""));
  }
  $("caption").textContent = parts.join(" · ") || "waiting for the first frame…";
  $("resume").hidden = !state.frozen;
  $("pause").hidden = !!state.frozen;
}

// ---------------------------------------------------------------------------------------
// drawing
// ---------------------------------------------------------------------------------------

function tracePolygons(masks, fill, stroke) {
  for (const m of masks) {
    for (const poly of m.polygons || []) {
      if (poly.length < 4) continue;
      ctx.beginPath();
      ctx.moveTo(poly[0] + 0.5, poly[1] + 0.5);
      for (let k = 2; k < poly.length; k += 2) ctx.lineTo(poly[k] + 0.5, poly[k + 1] + 0.5);
      ctx.closePath();
      ctx.fillStyle = fill(m);
      ctx.fill();
      ctx.strokeStyle = stroke(m);
      ctx.lineWidth = 2;
      ctx.stroke();
    }
  }
}

function withAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

// a dark tag with white text above each mask's box (the word of a YOLOE mask, a prompt's number)
function drawLabels(masks, text) {
  ctx.font = "bold 16px system-ui, sans-serif";
  for (const m of masks) {
    const [x1, y1] = m.bbox_xyxy;
    const label = text(m);
    const tw = ctx.measureText(label).width + 8;
    ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
    ctx.fillRect(x1, Math.max(0, y1 - 20), tw, 20);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + 4, Math.max(15, y1 - 5));
  }
}

function draw() {
  const w = img.naturalWidth, h = img.naturalHeight;
  if (!w || !h) return;
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  ctx.clearRect(0, 0, w, h);
  // tracked masks keep their track's colour from frame to frame (no flicker); untracked: grey
  const color = (m) => (m.track_id === undefined ? COLORS[m.id % COLORS.length]
    : m.track_id >= 0 ? COLORS[m.track_id % COLORS.length] : "#a0a0a0");
  if (state.frozen) {
    const sel = state.selection;
    if (sel && sel.masks) {
      const pcolor = (m) => COLORS[(m.prompt_index || 0) % COLORS.length];
      tracePolygons(sel.masks, (m) => withAlpha(pcolor(m), 0.45), pcolor);
      drawLabels(sel.masks, (m) => `#${m.prompt_index}${m.label ? ` ${m.label}` : ""} ${m.score.toFixed(2)}`);
    }
    for (const b of state.boxes) {
      ctx.strokeStyle = "#ffeb3b";
      ctx.lineWidth = 2;
      ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
    }
    for (const p of state.points) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, 6, 0, 2 * Math.PI);
      ctx.fillStyle = p.label ? "#00e676" : "#ff1744";
      ctx.fill();
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 2;
      ctx.stroke();
    }
  } else if (state.latest && state.latest.masks && state.latest.image &&
             state.latest.image.width === w && state.latest.image.height === h &&
             Number(img.dataset.frameId) === state.latest.frame_id) {
    // masks only over the frame they were computed on: over any other frame (even the next
    // one) they would outline objects that have moved; the caption says whose masks they are
    tracePolygons(state.latest.masks, (m) => withAlpha(color(m), 0.3), color);
    drawLabels(state.latest.masks.filter((m) => m.label), (m) => `${m.label} ${m.score.toFixed(2)}`);
    state.drawLog.push({ image: Number(img.dataset.frameId), masks: state.latest.frame_id });
    if (state.drawLog.length > 200) state.drawLog.shift();
  }
  if (drag && drag.moved) {
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#ffeb3b";
    ctx.lineWidth = 2;
    ctx.strokeRect(drag.x0, drag.y0, drag.x1 - drag.x0, drag.y1 - drag.y0);
    ctx.setLineDash([]);
  }
}

// ---------------------------------------------------------------------------------------
// prompts on the shown frame
// ---------------------------------------------------------------------------------------

function imagePoint(ev) {
  const r = canvas.getBoundingClientRect();
  const x = ((ev.clientX - r.left) / r.width) * img.naturalWidth;
  const y = ((ev.clientY - r.top) / r.height) * img.naturalHeight;
  return {
    x: Math.min(Math.max(Math.round(x), 0), img.naturalWidth - 1),
    y: Math.min(Math.max(Math.round(y), 0), img.naturalHeight - 1),
    scale: img.naturalWidth / r.width,
  };
}

function freeze() {
  if (!state.frozen && state.live) {
    state.frozen = { frameId: state.live.frameId, name: state.live.name };
  }
  return state.frozen;
}

canvas.addEventListener("pointerdown", (ev) => {
  if (!img.naturalWidth || !state.live) return;
  canvas.setPointerCapture(ev.pointerId);
  const p = imagePoint(ev);
  drag = { x0: p.x, y0: p.y, x1: p.x, y1: p.y, moved: false, scale: p.scale, shift: ev.shiftKey };
  freeze(); // the frame under the pointer is the one prompted
});

canvas.addEventListener("pointermove", (ev) => {
  if (!drag) return;
  const p = imagePoint(ev);
  drag.x1 = p.x;
  drag.y1 = p.y;
  if (Math.hypot(p.x - drag.x0, p.y - drag.y0) / drag.scale > DRAG_PX) drag.moved = true;
  if (drag.moved) draw();
});

canvas.addEventListener("pointerup", (ev) => {
  if (!drag) return;
  const d = drag;
  drag = null;
  if (d.moved) {
    const box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)];
    if (box[2] > box[0] && box[3] > box[1]) state.boxes.push(box);
  } else {
    const negative = d.shift || ev.shiftKey || $("negative").checked;
    state.points.push({ x: d.x0, y: d.y0, label: negative ? 0 : 1 });
  }
  draw();
  sendPrompts();
});

canvas.addEventListener("pointercancel", () => {
  drag = null;
  draw();
});

$("text-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text || !freeze()) return;
  state.texts.push(text);
  sendPrompts();
});

function promptList() {
  const out = [];
  if (state.points.length) {
    out.push({
      type: "point",
      data: state.points.map((p) => [p.x, p.y]),
      label: state.points.map((p) => p.label),
      mode: "best",
    });
  }
  for (const b of state.boxes) out.push({ type: "box", data: b });
  for (const t of state.texts) out.push({ type: "text", data: t });
  return out;
}

let inflight = false;
let resend = false;

async function sendPrompts() {
  // one request at a time (the service answers 503 to a second): prompts added meanwhile are
  // sent together once the current answer is in
  if (inflight) {
    resend = true;
    return;
  }
  const prompt = promptList();
  if (!prompt.length || !state.frozen) {
    state.selection = null;
    draw();
    return;
  }
  const body = { frame_id: state.frozen.frameId, prompt, save: $("save").checked };
  state.lastRequest = body;
  setMessage("prompting…");
  inflight = true;
  const t0 = performance.now();
  try {
    const res = await withRetry(() => api("/prompt", { method: "POST", body }));
    if (state.lastRequest === body) {
      state.selection = res;
      const ms = Math.round(performance.now() - t0);
      setMessage(`${res.num_masks} mask(s) in ${ms} ms` + (res.result_dir ? ` · saved ${res.result_dir}` : ""));
    }
  } catch (e) {
    state.errors += 1;
    state.selection = null;
    setMessage(`Prompt failed: ${e.message}`, true);
  } finally {
    inflight = false;
  }
  draw();
  updateCaption();
  if (resend) {
    resend = false;
    sendPrompts();
  }
}

// "busy" (another request, e.g. a trigger, is being answered): try again a few times
async function withRetry(call, tries = 4) {
  for (let k = 1; ; k += 1) {
    try {
      return await call();
    } catch (e) {
      if (e.status !== 503 || k >= tries || !/^busy/.test(e.message)) throw e;
      await new Promise((r) => setTimeout(r, 400 * k));
    }
  }
}

function resume() {
  state.frozen = null;
  state.points = [];
  state.boxes = [];
  state.texts = [];
  state.selection = null;
  state.lastRequest = null;
  draw();
  updateCaption();
}

$("resume").addEventListener("click", resume);
$("pause").addEventListener("click", () => {
  freeze();
  updateCaption();
});
$("clear").addEventListener("click", () => {
  state.points = [];
  state.boxes = [];
  state.texts = [];
  state.selection = null;
  draw();
});

$("trigger").addEventListener("click", async () => {
  setMessage("segmenting a new frame…");
  try {
    const body = { save: $("save").checked };
    const res = await withRetry(() => api("/trigger", { method: "POST", body }));
    resume();
    state.latest = res;
    setMessage(`frame ${res.frame_id}: ${res.num_masks} mask(s)` + (res.result_dir ? ` · saved ${res.result_dir}` : ""));
    draw();
  } catch (e) {
    setMessage(`Trigger failed: ${e.message}`, true);
  }
});

// ---------------------------------------------------------------------------------------
// the vocabulary (open-vocabulary YOLOE bundles)
// ---------------------------------------------------------------------------------------

const countsText = (counts) => Object.entries(counts || {}).map(([w, n]) => `${w} ${n}`).join(", ");

function renderVocabulary(v) {
  state.vocabulary = v || null;
  const yoloe = !!v && v.kind === "yoloe";
  $("vocab-form").hidden = !yoloe; // FastSAM is class-agnostic: nothing to name
  $("s-model").textContent = !v ? "–" : yoloe ? `YOLOE-${v.family} · ${v.vocabulary.length} word(s)`
    : v.kind === "fastsam" ? "FastSAM (class-agnostic)" : "–";
  $("s-counts").textContent = v && v.counts ? countsText(v.counts) || "–" : "–";
  if (!yoloe) return;
  const box = $("vocab");
  if (!state.vocabEdited && document.activeElement !== box) box.value = v.vocabulary.join(", ");
  const status = v.error ? `Last change failed: ${v.error}`
    : v.encoding ? "encoding new words…"
    : v.pending ? "applies from the next frame" : `finds ${v.vocabulary.length} word(s) (${v.source})`;
  $("vocab-status").textContent = status;
  $("vocab-status").className = v.error ? "error" : "muted";
}

$("vocab").addEventListener("input", () => { state.vocabEdited = true; });

async function setVocabulary(words) {
  setMessage("setting the vocabulary…");
  try {
    const res = await api("/vocabulary", { method: "POST", body: { vocabulary: words } });
    state.vocabEdited = false;
    renderVocabulary({ ...res, counts: state.vocabulary && state.vocabulary.counts });
    setMessage(res.status === "encoding" ? "vocabulary: encoding new words…"
      : `vocabulary: ${res.vocabulary.join(", ")} (from the next frame)`);
  } catch (e) {
    setMessage(`Vocabulary not changed: ${e.message}`, true);
  }
}

$("vocab-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const words = $("vocab").value.split(",").map((w) => w.trim()).filter((w) => w);
  if (words.length) setVocabulary(words);
});
$("vocab-reset").addEventListener("click", () => setVocabulary([]));

// ---------------------------------------------------------------------------------------
// status and recent results
// ---------------------------------------------------------------------------------------

function parseMetrics(text) {
  const sums = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m) continue;
    sums[m[1]] = (sums[m[1]] || 0) + Number(m[3]);
  }
  return sums;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function pollStatus() {
  if (state.authorised) {
    try {
      const [health, text] = await Promise.all([api("/healthz"), api("/metrics")]);
      const m = parseMetrics(text);
      const now = performance.now();
      if (prevFrames) {
        const fps = (m.fastsam_frames_total - prevFrames.n) / ((now - prevFrames.t) / 1000);
        $("s-fps").textContent = fps.toFixed(1);
      }
      prevFrames = { n: m.fastsam_frames_total || 0, t: now };
      $("s-latency").textContent = health.last_latency_ms !== null ? `${Math.round(health.last_latency_ms)} ms` : "–";
      $("s-queue").textContent = health.queue_depth;
      $("s-drops").textContent = m.fastsam_dropped_total || 0;
      $("s-errors").textContent = m.fastsam_errors_total || 0;
      $("s-disk").textContent = fmtBytes(health.disk_free_bytes);
      const b = health.bundle || {};
      $("s-bundle").textContent = b.name || "–";
      $("s-precision").textContent = b.precision || "–";
      $("bundle").textContent = b.name ? `${b.name} (${b.precision})` : "";
      $("s-cache").textContent = `${m.fastsam_prompt_cache_frames || 0} · ${fmtBytes(m.fastsam_prompt_cache_bytes)} of ${fmtBytes(m.fastsam_prompt_cache_limit_bytes)}`;
      $("s-source").textContent = `${health.source.name}${health.source.open ? "" : " (down)"}`;
      const badge = $("health");
      badge.textContent = health.status === "ok" ? "healthy" : health.problems.join("; ");
      badge.className = `badge ${health.status === "ok" ? "ok" : "bad"}`;
    } catch (e) {
      const badge = $("health");
      badge.textContent = "unreachable";
      badge.className = "badge bad";
    }
  }
  setTimeout(pollStatus, STATUS_INTERVAL_MS);
}

async function pollResults() {
  if (state.authorised) {
    try {
      const { results } = await api("/results");
      const ul = $("results");
      const names = results.map((r) => r.name).join(",");
      if (ul.dataset.names !== names) {
        ul.dataset.names = names;
        ul.replaceChildren(...results.map(resultItem));
      }
    } catch (e) { /* next poll */ }
  }
  setTimeout(pollResults, RESULTS_INTERVAL_MS);
}

function renderEvents(s) {
  const section = $("events-section");
  section.hidden = !s.tracking;
  const events = s.events || [];
  const ul = $("events");
  const key = events.map((e) => e.seq).join(",");
  if (ul.dataset.key === key) return;
  ul.dataset.key = key;
  ul.replaceChildren(...events.map((e) => {
    const li = document.createElement("li");
    li.className = `event ${e.type}`;
    if (e.thumb) {
      const im = document.createElement("img");
      im.alt = `object ${e.track_id}`;
      im.src = `/events/thumb?seq=${e.seq}`;
      li.append(im);
    }
    const text = document.createElement("span");
    const when = new Date(e.time).toLocaleTimeString();
    text.textContent = `${e.type} #${e.track_id}${e.label ? ` ${e.label}` : ""} · frame ${e.frame_id} · ${when}`;
    li.append(text);
    return li;
  }));
}

function resultItem(r) {
  const li = document.createElement("li");
  const q = (file) => `/results/file?name=${encodeURIComponent(r.name)}&file=${file}`;
  if (r.files.overlay || r.files.frame) {
    const a = document.createElement("a");
    a.href = q(r.files.overlay ? "overlay" : "frame");
    a.target = "_blank";
    a.rel = "noopener";
    const im = document.createElement("img");
    im.loading = "lazy";
    im.alt = `result of frame ${r.frame_id}`;
    im.src = q("thumb");
    a.append(im);
    li.append(a);
  }
  const json = document.createElement("a");
  json.href = q("json");
  json.target = "_blank";
  json.rel = "noopener";
  const sum = r.summary;
  const found = sum && sum.counts ? countsText(Object.fromEntries(
    Object.entries(sum.counts).filter(([, n]) => n > 0))) : "";
  json.textContent = `frame ${r.frame_id}` + (sum ? ` · ${sum.num_masks} mask(s)` : "") +
    (found ? ` · ${found}` : "") + " · JSON";
  li.append(json);
  return li;
}

// ---------------------------------------------------------------------------------------
// start
// ---------------------------------------------------------------------------------------

async function tick() {
  try {
    const s = await api("/session");
    state.tokenRequired = s.token_required;
    if (s.authorised) showApp(); else showLogin();
  } catch (e) {
    setMessage(`Service unreachable: ${e.message}`, true);
  }
}

window.addEventListener("resize", draw);
tick().then(() => {
  pollLive();
  pollState();
  pollStatus();
  pollResults();
});
