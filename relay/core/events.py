"""The observer protocol's event table, built explicitly from each module's ``EVENTS``.

One place lists every module that contributes events, so adding an event means adding it
to its module's ``EVENTS`` tuple (and a new module here): nothing registers itself as a
side effect of being imported.
"""

from __future__ import annotations

from . import classroom, lifecycle, messages, rtc, sharing, steps
from .registry import build_table

EVENT_TABLE = build_table(
    lifecycle.EVENTS, messages.EVENTS, classroom.EVENTS, sharing.EVENTS, steps.EVENTS,
    rtc.EVENTS,
)
