"""Triggers: interval, motion (int16 frame differencing) and GPIO edges.

The HTTP trigger lives in :mod:`edge.service.http`; it hands its request to the frame loop,
which captures a frame for it like any other trigger.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.service.config import ConfigError, GpioConfig, MotionConfig

_LOGGER = logging.getLogger(__name__)


class IntervalTrigger:
    """Fires every ``seconds`` (0: on every frame), on a monotonic clock.

    After a long stall (e.g. a reconnecting camera) it fires once and starts a new schedule
    instead of firing a burst of missed ticks.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next: float | None = None

    def due(self, now: float) -> bool:
        """Whether a frame should be taken now."""
        return self._next is None or now >= self._next

    def fired(self, now: float) -> None:
        """Record that a frame was taken at ``now``."""
        if self._next is None or now - self._next >= self.seconds:
            self._next = now + self.seconds
        else:
            self._next += self.seconds

    def wait_time(self, now: float) -> float:
        """Seconds until the next tick (0 when due)."""
        return 0.0 if self._next is None else max(0.0, self._next - now)


class MotionTrigger:
    """Frame differencing on a small gray copy, in int16 (no uint8 wrap-around).

    Each frame is shrunk to ``width`` pixels wide and blurred; a pixel has changed when it
    differs from the background by more than ``threshold`` gray levels. Motion is a changed
    fraction of at least ``min_area`` in ``frames`` consecutive frames; after firing, the
    trigger stays quiet for ``cooldown_s``. The background follows the picture as an
    exponential moving average (``background_alpha``; 1 = previous frame).
    """

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self._bg: NDArray[np.int16] | None = None
        self._streak = 0
        self._quiet_until = -float("inf")
        self.last_score = 0.0

    def reset(self) -> None:
        """Forget the background (e.g. after the camera was reopened)."""
        self._bg = None
        self._streak = 0

    def small_gray(self, image: NDArray[np.uint8]) -> NDArray[np.int16]:
        """(h, width) int16 gray copy used for differencing."""
        h, w = image.shape[:2]
        width = min(self.cfg.width, w)
        height = max(1, round(h * width / w))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        small = cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (3, 3), 0)
        return small.astype(np.int16)

    def update(self, image: NDArray[np.uint8], now: float) -> bool:
        """Feed one frame; returns True when motion fires."""
        cur = self.small_gray(image)
        bg = self._bg
        if bg is None or bg.shape != cur.shape:
            self._bg = cur
            self._streak = 0
            self.last_score = 0.0
            return False
        diff = np.abs(cur - bg)  # int16: values in [0, 255], no wrap-around
        changed = float(np.count_nonzero(diff > self.cfg.threshold)) / diff.size
        self.last_score = changed
        alpha = self.cfg.background_alpha
        if alpha >= 1.0:
            self._bg = cur
        else:  # bg += alpha * (cur - bg), rounded, still int16
            self._bg = (bg + np.rint((cur - bg) * alpha)).astype(np.int16)
        self._streak = self._streak + 1 if changed >= self.cfg.min_area else 0
        if now < self._quiet_until:
            return False
        if self._streak >= self.cfg.frames:
            self._streak = 0
            self._quiet_until = now + self.cfg.cooldown_s
            _LOGGER.debug("motion: %.1f %% of the frame changed", changed * 100)
            return True
        return False


class GpioUnavailable(ConfigError, RuntimeError):
    """``[trigger.gpio]`` is enabled but cannot work here (no gpiozero, no pin driver, pin busy).

    A :class:`ConfigError` (the service stops at start-up with one line naming the key), and a
    ``RuntimeError`` as before.
    """


class GpioTrigger:
    """A GPIO edge through gpiozero (imported in :meth:`open`).

    ``pull_up`` = True: the input idles high and a button to ground gives a falling edge
    (gpiozero's "pressed"). Tests pass gpiozero's ``MockFactory`` as ``pin_factory``.
    """

    def __init__(
        self,
        cfg: GpioConfig,
        on_edge: Callable[[], None] | None = None,
        pin_factory: Any = None,
    ) -> None:
        self.cfg = cfg
        self.on_edge = on_edge
        self.pin_factory = pin_factory
        self._button: Any = None
        self._pending = 0
        self._lock = threading.Lock()

    def open(self) -> None:
        """Claim the pin.

        Raises:
            GpioUnavailable: gpiozero is missing, no pin driver loads, or the pin cannot be
                claimed.
        """
        try:
            from gpiozero import Button  # optional dependency, imported only when configured
        except ImportError as exc:
            raise GpioUnavailable(
                f"trigger.gpio: gpiozero is not installed ({exc}); on a Pi: sudo apt install "
                "python3-gpiozero python3-lgpio (venv with --system-site-packages)"
            ) from None
        c = self.cfg
        try:
            button = Button(
                c.pin,
                pull_up=c.pull_up,
                bounce_time=c.bounce_s or None,
                pin_factory=self.pin_factory,
            )
        except Exception as exc:  # gpiozero raises many types (PinInUse, BadPinFactory, ...)
            hint = ""
            if "PinFactory" in type(exc).__name__:  # no driver: not a Pi, or lgpio missing
                hint = (
                    " (no GPIO pin driver: on a Pi `sudo apt install python3-lgpio`; elsewhere "
                    "set trigger.gpio.enabled = false)"
                )
            raise GpioUnavailable(
                f"trigger.gpio: cannot use pin {c.pin}: {type(exc).__name__}: {exc}{hint}"
            ) from None
        # "pressed" is the pin going to its active level: low with a pull-up, high without.
        falling_is_press = c.pull_up
        if c.edge in ("falling", "both"):
            setattr(button, "when_pressed" if falling_is_press else "when_released", self._edge)
        if c.edge in ("rising", "both"):
            setattr(button, "when_released" if falling_is_press else "when_pressed", self._edge)
        self._button = button

    def _edge(self, *_args: Any) -> None:
        with self._lock:
            self._pending += 1
        if self.on_edge is not None:
            self.on_edge()

    def take(self) -> int:
        """Edges seen since the last call."""
        with self._lock:
            n, self._pending = self._pending, 0
        return n

    def close(self) -> None:
        if self._button is not None:
            try:
                self._button.close()
            finally:
                self._button = None
