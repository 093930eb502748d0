#!/usr/bin/env python3
"""Measure the service's surfaces under abuse (issue 23): the numbers in docs/service.md.

Three probes, each printing one JSON object:

* ``bpe``: RSS of a :class:`edge.tokenizer.ClipTokenizer` before and after ``--prompts`` text
  prompts of ``--kb`` KiB of new words each (the BPE cache). Needs the ``text`` extra (ftfy,
  regex); without ``--merges`` (open_clip's ``bpe_simple_vocab_16e6.txt.gz``) it writes a
  synthetic merges file of the right length (letter pairs and triples), which gives the cache
  the same kind of entries.
* ``auth``: a ``serve --demo --http`` service with a token in a child process; ``--threads``
  clients send wrong ``Authorization: Bearer`` guesses for ``--seconds``; prints the answers per
  second by status (401: a guess checked, 429: throttled) and, while 40 clients send wrong
  ``POST /login`` bodies, how many of 30 ``GET /healthz`` answered 200.
* ``mqtt``: a private mosquitto (``/usr/sbin/mosquitto``) and a ``serve --demo`` service with
  MQTT on; one ``--mb`` MiB message to ``<prefix>/trigger``; prints the service's peak RSS
  (``VmHWM``) before and after.

    python scripts/probe_abuse.py bpe --prompts 300 --kb 60
    python scripts/probe_abuse.py auth --seconds 5 --threads 8
    python scripts/probe_abuse.py mqtt --mb 150
"""

from __future__ import annotations

import argparse
import gc
import gzip
import http.client
import itertools
import json
import os
import random
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

TOKEN = "probe-token-0123456789abcdef"


def rss_mib(pid: int | str = "self", field: str = "VmRSS") -> float:
    """``VmRSS`` (or ``VmHWM``) of a process in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------
# bpe
# ------------------------------------------------------------------------------------------


def synthetic_merges(path: Path) -> Path:
    """A merges file of open_clip's length: letter pairs, then pair + letter, then filler."""
    from edge.tokenizer import NUM_MERGES

    letters = string.ascii_lowercase
    merges: list[str] = []
    for a, b in itertools.product(letters, letters):
        merges += [f"{a} {b}", f"{a} {b}</w>"]
    for a, b, c in itertools.product(letters, letters, letters):
        merges += [f"{a}{b} {c}", f"{a}{b} {c}</w>"]
    filler = (f"Ā{i} ā{i}" for i in itertools.count())
    while len(merges) < NUM_MERGES:
        merges.append(next(filler))
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("#version: synthetic\n" + "\n".join(merges[:NUM_MERGES]) + "\n")
    return path


def cmd_bpe(args: argparse.Namespace) -> dict[str, Any]:
    from edge.tokenizer import ClipTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        merges = Path(args.merges) if args.merges else synthetic_merges(Path(tmp) / "m.txt.gz")
        tok = ClipTokenizer.from_file(merges)
    rng = random.Random(0)
    tok(["a photo of a dog", "a red circle"])
    gc.collect()
    before = rss_mib()
    t0 = time.perf_counter()
    for _ in range(args.prompts):
        words, size = [], 0
        while size < args.kb * 1024:
            w = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 12)))
            words.append(w)
            size += len(w) + 1
        tok([" ".join(words)])
    elapsed = time.perf_counter() - t0
    gc.collect()
    cache = tok._cache
    stats = cache.stats() if hasattr(cache, "stats") else {"entries": len(cache or {})}
    return {
        "probe": "bpe",
        "prompts": args.prompts,
        "kib_each": args.kb,
        "merges": "synthetic" if not args.merges else str(args.merges),
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(rss_mib(), 1),
        "seconds": round(elapsed, 1),
        "cache": stats,
    }


# ------------------------------------------------------------------------------------------
# auth
# ------------------------------------------------------------------------------------------


def start_service(tmp: str, *sets: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "edge.cli", "serve", "--demo", "--http", "--out", tmp,
        "--set", f"http.port={port}", "--set", "trigger.interval.enabled=false",
        "--set", "service.log_level=\"warning\"",
    ]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    log = open(Path(tmp) / "service.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status, _ = request(port, "GET", "/healthz")
            if status in (200, 503):
                return proc, port
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError((Path(tmp) / "service.log").read_text()[-2000:])


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def hammer(port: int, seconds: float, threads: int, make: Any) -> Counter[int]:
    counts: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            try:
                status, _ = request(port, *make(i, n))
            except OSError:
                status = -1
            with lock:
                counts[status] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return counts


def cmd_auth(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_service(tmp, f'http.token="{TOKEN}"')
        try:
            counts = hammer(
                port,
                args.seconds,
                args.threads,
                lambda i, n: ("GET", "/latest", None, {"Authorization": f"Bearer guess{i}-{n}"}),
            )
            # the token still works for its owner while guesses come in
            owner, _ = request(port, "GET", "/metrics", None, {"Authorization": f"Bearer {TOKEN}"})
            health: Counter[int] = Counter()

            def healthz() -> None:
                for _ in range(30):
                    try:
                        health[request(port, "GET", "/healthz")[0]] += 1
                    except OSError:
                        health[-1] += 1

            checker = threading.Thread(target=healthz)
            checker.start()
            logins = hammer(
                port,
                args.seconds,
                40,
                lambda i, n: (
                    "POST",
                    "/login",
                    json.dumps({"token": f"guess{i}-{n}"}).encode(),
                    {"Content-Type": "application/json"},
                ),
            )
            checker.join()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        warnings = [
            line
            for line in (Path(tmp) / "service.log").read_text().splitlines()
            if "WARNING" in line and ("credential" in line or "token" in line)
        ]
    total = sum(counts.values())
    return {
        "probe": "auth",
        "seconds": args.seconds,
        "threads": args.threads,
        "answers_per_s": round(total / args.seconds, 1),
        "checked_guesses_per_s": round(counts[401] / args.seconds, 1),
        "by_status": dict(counts),
        "owner_status_during_flood": owner,
        "login_flood_by_status": dict(logins),
        "healthz_during_login_flood": dict(health),
        "auth_warnings_logged": len(warnings),
    }


# ------------------------------------------------------------------------------------------
# mqtt
# ------------------------------------------------------------------------------------------


def cmd_mqtt(args: argparse.Namespace) -> dict[str, Any]:
    import paho.mqtt.client as mqtt

    with tempfile.TemporaryDirectory() as tmp:
        bport = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {bport} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen(
            [args.mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            time.sleep(1.0)
            proc, _ = start_service(
                tmp, "mqtt.enabled=true", f"mqtt.port={bport}", 'mqtt.host="127.0.0.1"'
            )
            try:
                time.sleep(3.0)  # connected and subscribed
                gc.collect()
                hwm0, rss0 = rss_mib(proc.pid, "VmHWM"), rss_mib(proc.pid)
                client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe")
                client.connect("127.0.0.1", bport)
                client.loop_start()
                payload = b"x" * (args.mb << 20)
                client.publish("fastsam-edge/trigger", payload, qos=0).wait_for_publish(60)
                del payload
                time.sleep(args.wait)
                client.loop_stop()
                client.disconnect()
                alive = proc.poll() is None
                hwm1, rss1 = rss_mib(proc.pid, "VmHWM"), rss_mib(proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            log = (Path(tmp) / "service.log").read_text()
        finally:
            broker.terminate()
            broker.wait(timeout=10)
    return {
        "probe": "mqtt",
        "message_mib": args.mb,
        "service_alive": alive,
        "peak_rss_before_mib": round(hwm0, 1),
        "peak_rss_after_mib": round(hwm1, 1),
        "rss_before_mib": round(rss0, 1),
        "rss_after_mib": round(rss1, 1),
        "log_tail": log.splitlines()[-5:],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bpe")
    b.add_argument("--prompts", type=int, default=300)
    b.add_argument("--kb", type=int, default=60)
    b.add_argument("--merges", help="open_clip's bpe_simple_vocab_16e6.txt.gz")
    b.set_defaults(func=cmd_bpe)
    a = sub.add_parser("auth")
    a.add_argument("--seconds", type=float, default=5.0)
    a.add_argument("--threads", type=int, default=8)
    a.set_defaults(func=cmd_auth)
    m = sub.add_parser("mqtt")
    m.add_argument("--mb", type=int, default=150)
    m.add_argument("--wait", type=float, default=10.0)
    m.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    m.set_defaults(func=cmd_mqtt)
    args = p.parse_args(argv)
    out = args.func(args)
    out["load"] = os.getloadavg()[0]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
