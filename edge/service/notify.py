"""``sd_notify`` written by hand (no dependency) and a watchdog pinger driven by progress.

systemd's protocol (sd_notify(3)): datagrams such as ``READY=1`` sent to the ``AF_UNIX``
socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` is the abstract namespace). The watchdog is
on when ``$WATCHDOG_USEC`` is set and ``$WATCHDOG_PID`` is unset or this process.
Outside systemd every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

_LOGGER = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to systemd; a no-op when ``NOTIFY_SOCKET`` is unset."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if address.startswith("@"):
            self.address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self.address = address
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether systemd listens."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; False (logged) on failure."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # never block the frame loop on a full socket (a lost ping is harmless)
            self._sock.sendto("\n".join(fields).encode("utf-8"), socket.MSG_DONTWAIT, self.address)
            return True
        except BlockingIOError:
            _LOGGER.debug("sd_notify %s dropped: the notify socket is full", fields[0])
            return False
        except OSError as exc:
            _LOGGER.warning("sd_notify %s failed: %s", fields[0] if fields else "", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WatchdogPinger:
    """Sends ``WATCHDOG=1`` only when the service reports progress, at most every period/4.

    The frame loop calls :meth:`progress` after each iteration in which it did its work and
    the segmenter is not stalled, so a hung camera read or segmentation call stops the pings
    and systemd restarts the service after ``WatchdogSec``.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.period = notifier.watchdog_s
        self._last: float | None = None
        self.pings = 0

    def progress(self, now: float) -> bool:
        """Report progress at monotonic time ``now``; returns whether a ping was sent."""
        if self.period is None:
            return False
        if self._last is not None and now - self._last < self.period / 4:
            return False
        self._last = now
        self.pings += 1
        return self.notifier.watchdog()
