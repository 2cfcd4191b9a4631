"""Synthetic "screen" video for the headless peer, and the decoder for what it carries.

The student side has no screen to capture, so it sends a generated test pattern instead:
scrolling colour bars, a bouncing square (so every frame really differs and the encoder keeps
working), the frame number drawn as large digits for humans looking at a snapshot, and the same
number as a strip of black/white blocks that survives lossy VP8 coding.  The host decodes that
strip from every received frame, so "frames flowed" is checked end to end, not just counted.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

RGB = npt.NDArray[np.uint8]

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)

COUNTER_BITS = 24
CHECK_BITS = 8
MIN_WIDTH = 320
MIN_HEIGHT = 180

# 3x5 bitmap digits, scaled up when drawn.
_FONT = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
}
_GLYPHS = {d: np.array([[c == "1" for c in row] for row in rows]) for d, rows in _FONT.items()}

_BARS = np.array(
    [
        (235, 235, 235),
        (235, 235, 16),
        (16, 235, 235),
        (16, 235, 16),
        (235, 16, 235),
        (235, 16, 16),
        (16, 16, 235),
        (40, 40, 40),
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class StripLayout:
    """Where the counter blocks sit; derived from the frame size only, so both ends agree."""

    top: int
    cell: int
    left: int
    cells: int  # two marker cells (white, black) followed by the payload bits

    @classmethod
    def for_size(cls, width: int, height: int) -> StripLayout:
        cells = 2 + COUNTER_BITS + CHECK_BITS
        cell = max(4, min(width // (cells + 2), height // 8))
        left = (width - cells * cell) // 2
        top = height - cell - max(2, cell // 2)
        return cls(top=top, cell=cell, left=left, cells=cells)


def _checksum(counter: int) -> int:
    """8-bit check over the 24 counter bits, so a misread strip is rejected, not trusted."""
    b = counter.to_bytes(3, "big")
    return (b[0] * 7 + b[1] * 13 + b[2] * 29 + 0x5A) & 0xFF


def _payload_bits(counter: int) -> list[int]:
    value = ((counter & 0xFFFFFF) << CHECK_BITS) | _checksum(counter & 0xFFFFFF)
    total = COUNTER_BITS + CHECK_BITS
    return [(value >> (total - 1 - i)) & 1 for i in range(total)]


class PatternGenerator:
    """Draws numbered test-pattern frames; cheap enough (numpy only) for 30 fps on one core."""

    def __init__(self, width: int = 640, height: int = 360) -> None:
        if width < MIN_WIDTH or height < MIN_HEIGHT or width % 2 or height % 2:
            raise ValueError(f"frame size must be even and at least {MIN_WIDTH}x{MIN_HEIGHT}")
        self.width = width
        self.height = height
        self.layout = StripLayout.for_size(width, height)
        strip_top = self.layout.top - max(2, self.layout.cell // 2)
        self._bars_height = strip_top
        bar_index = (np.arange(width) * len(_BARS)) // width
        row = _BARS[bar_index]  # (width, 3)
        self._bars: RGB = np.ascontiguousarray(np.broadcast_to(row, (strip_top, width, 3)))
        self._scale = max(2, height // 40)

    def render(self, counter: int) -> RGB:
        """Return an RGB frame (height, width, 3) showing `counter`."""
        h, w = self.height, self.width
        img = np.empty((h, w, 3), dtype=np.uint8)
        img[: self._bars_height] = np.roll(self._bars, (counter * 4) % w, axis=1)
        img[self._bars_height :] = 128
        self._draw_square(img, counter)
        self._draw_digits(img, counter)
        self._draw_strip(img, counter)
        return img

    def _draw_square(self, img: RGB, counter: int) -> None:
        size = max(8, self.height // 8)
        span_x = max(1, self.width - size)
        span_y = max(1, self._bars_height - size)
        x = abs((counter * 7) % (2 * span_x) - span_x)
        y = abs((counter * 5) % (2 * span_y) - span_y)
        img[y : y + size, x : x + size] = (255, 128, 0)

    def _draw_digits(self, img: RGB, counter: int) -> None:
        s = self._scale
        text = str(counter)
        glyph_w, glyph_h, gap = 3 * s, 5 * s, s
        total_w = len(text) * (glyph_w + gap) - gap
        x0 = max(0, (self.width - total_w) // 2)
        y0 = max(0, self._bars_height // 2 - glyph_h // 2)
        pad = s
        img[max(0, y0 - pad) : y0 + glyph_h + pad, max(0, x0 - pad) : x0 + total_w + pad] = 0
        for i, ch in enumerate(text):
            mask = np.kron(_GLYPHS[ch], np.ones((s, s), dtype=bool))
            x = x0 + i * (glyph_w + gap)
            if x + glyph_w > self.width:
                break
            region = img[y0 : y0 + glyph_h, x : x + glyph_w]
            region[mask] = 255

    def _draw_strip(self, img: RGB, counter: int) -> None:
        lay = self.layout
        bits = [1, 0, *_payload_bits(counter)]
        for i, bit in enumerate(bits):
            x = lay.left + i * lay.cell
            img[lay.top : lay.top + lay.cell, x : x + lay.cell] = 255 if bit else 0


def decode_counter(rgb: npt.NDArray[Any]) -> int | None:
    """Read the frame number from a received frame, or None if the strip is unreadable."""
    height, width = rgb.shape[0], rgb.shape[1]
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        return None
    lay = StripLayout.for_size(width, height)
    margin = max(1, lay.cell // 4)
    y0, y1 = lay.top + margin, lay.top + lay.cell - margin
    levels = []
    for i in range(lay.cells):
        x = lay.left + i * lay.cell
        patch = rgb[y0:y1, x + margin : x + lay.cell - margin]
        levels.append(float(patch.mean()))
    if not (levels[0] > 160 and levels[1] < 96):
        return None
    bits = [1 if v >= 128 else 0 for v in levels[2:]]
    value = 0
    for b in bits:
        value = (value << 1) | b
    counter, check = value >> CHECK_BITS, value & 0xFF
    if _checksum(counter) != check:
        return None
    return counter


class FrameSource:
    """Shared frame counter, so a rebuilt connection (polite rollback) continues numbering."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        self.generator = PatternGenerator(width, height)
        self.fps = fps
        self.next_counter = 0
        self.frames_sent = 0
        self.first_sent_at: float | None = None
        self.last_sent_at: float | None = None

    def track(self) -> SyntheticScreenTrack:
        return SyntheticScreenTrack(self)


class SyntheticScreenTrack(MediaStreamTrack):
    """A video track that paces itself at the source's fps and stamps each frame's number."""

    kind = "video"

    def __init__(self, source: FrameSource) -> None:
        super().__init__()
        self._source = source
        self._start: float | None = None
        self._index = 0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self._index / self._source.fps
            if due > now:
                await asyncio.sleep(due - now)
        pts = round(self._index * VIDEO_CLOCK_RATE / self._source.fps)
        self._index += 1
        src = self._source
        counter = src.next_counter
        src.next_counter += 1
        frame = VideoFrame.from_ndarray(src.generator.render(counter), format="rgb24")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        src.frames_sent += 1
        stamp = time.monotonic()
        if src.first_sent_at is None:
            src.first_sent_at = stamp
        src.last_sent_at = stamp
        return frame
