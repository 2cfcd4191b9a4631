"""What a space asks of its shell, in order.

The core returns a list of these from every call; the shell carries them out in that
order, which is how the ordering rules of §9 are decided here rather than in I/O code.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import ServerFrame


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send ``frame`` to each listed client (connected ones only), in list order.

    One frame for many recipients: the shell renders it per connection's shape with
    ``frame.render(shape)``, which encodes once per shape and caches the bytes.
    """

    client_ids: tuple[int, ...]
    frame: ServerFrame


@dataclass(frozen=True, slots=True)
class Counted:
    """Increment counter ``metric`` with label value ``label`` by one.

    ``observer_errors_total`` (label: the code of an ``error`` or ``reject_update``),
    ``observer_service_requests_total`` (label: ``ok``, the failure code of a request, or
    ``cancelled``) and ``observer_messages_in_total`` (label: the client frame's ``type``
    when it is one of the seven, else ``unknown``; the shell adds ``endpoint="chatroom"``).
    """

    metric: str
    label: str


Action = Deliver | Counted

ERRORS_TOTAL = "observer_errors_total"
SERVICE_REQUESTS_TOTAL = "observer_service_requests_total"
MESSAGES_IN_TOTAL = "observer_messages_in_total"
