"""ChatRoom spaces (protocol v2 §9.1–§9.9): the sans-IO core.

Plain objects in the manner of h11/wsproto: a :class:`Space` takes one event at a time with
the time and an entropy source and returns the actions for the shell to carry out. See
``space.py`` for the entry points, ``frames.py`` for the two shapes of server frames.

Interpretations
---------------
Where §9 is silent or ambiguous, the core decides as follows (copied into the protocol's
Appendix D):

1. **null counts as absent** for optional keys of client content: the frame body ``args``
   (then ``content`` is read), subscribe ``type``, a change's ``id``, ``topic_name`` and
   ``topic_type``, request ``args`` and ``timeout``, response ``error``, emit ``args`` and
   ``forward_info``, a validator's ``reason``. Where a JSON value is expected (``value``,
   ``item``, ``response``) ``null`` is that value. Clients that serialise unset optional
   fields as ``null`` (TypeScript, Python dataclasses) thus work.
2. **Nesting.** A frame nesting arrays/objects deeper than 128 levels (the frame object is
   level 1) is ``bad_json``, like JSON that msgspec refuses for depth: every value the
   server stores or forwards can then be encoded from any stack depth.
3. **Change ``type``** missing or not a string is ``invalid_change`` (a string not in the
   topic's row is ``type_mismatch``).
4. **``topic_version`` below 0** is ``bad_version`` (a version the topic never had).
5. **Integers** the int topic accepts, ``position``, ``topic_version`` and integer
   ``request_id``s must be within ±(2^53 − 1) (an int ``add``'s ``value`` too, not only the
   sum), so JavaScript clients hold them exactly; beyond is ``invalid_change`` /
   ``invalid_payload``. ``error`` frames echo integer request ids only within that range.
6. **Float topics** accept integers and store them as floats (``2`` → ``2.0``); an integer
   too large for a 64-bit float is ``invalid_change``. An int topic refuses ``2.0``.
7. **Waiting changes**: the change at the validator counts among the 100 waiting; the
   101st change to arrive while 100 wait is ``rate_limited``.
8. **A change waiting for a validator outlives its sender**: if the sender's connection
   ends, the change is still validated and, if accepted, applied (its ``update`` goes to the
   other subscribers). After a validator accepts, the 16 MiB space total is checked again,
   since other topics may have grown meanwhile (``too_large``).
9. **A validator's answer** ``{"valid": false, "reason": R}`` with ``R`` not a string (nor
   ``null``) is ``validator_failed``; extra keys in the answer are ignored. A validator's
   answer is a ``response`` like any other: ``unknown_request``, ``too_large`` (the
   validation stays pending) and ``invalid_payload`` apply to it.
10. **Response size**: the 1 MiB limit applies to the compact JSON of ``response`` (or of
    ``error`` when present; ``error`` wins over ``response``).
11. **Seed-shape request failures**: the ``error`` before ``{"request_id", "response":
    null}`` echoes ``request_id`` and, when it is a string, ``service_name``.
12. **Metrics**: ``observer_errors_total{code}`` counts every ``error`` answering a client
    frame and every ``reject_update`` (by its code); the seed shape's ``error`` companion
    of a failed ``response`` is counted only in ``observer_service_requests_total``, whose
    ``result`` is ``ok``, a failure code, or ``cancelled`` (requester gone).
13. **Order of notes**: a timeout first answers the requester, then notes it in the
    provider's ``client_message`` topic. On disconnect the server status gets one
    ``service <name> unregistered`` per service (in registration order), then timeouts that
    were already due happen (as ``timeout``), then the other pending requests are failed /
    cancelled, then ``client <id> disconnected``; nothing is delivered to the departed
    client. A subscription that creates a topic is answered before ``topic <name> created
    by client <id>`` is set.
14. **Unregistering** a name that is not registered is ``service_not_found``, whatever the
    name (``_chatroom/…`` included).
15. **Inspector** ``subscribers`` is a count; ``pending`` counts the requests and validations
    pending at the service's current provider. ``generated_at`` truncates to milliseconds.
16. **Timeouts** fire when ``now >= deadline``; every call with entropy first expires what is
    due, so a late answer is ``unknown_request`` however promptly the shell ticks.
17. **Unknown client ids** passed to ``receive``/``disconnect`` (a shell race after a
    disconnect) are ignored: the call returns no actions.
18. **``message_type``** echoes the client's ``type`` whenever it is a string, even an empty
    one or one over 64 characters (both ``bad_frame``), as §9.2 says.
19. **Rate-limited messages** are dropped unprocessed (§2.2): a malformed message arriving
    without a token gets no frame error, only the (at most once per second) ``rate_limited``
    error, whose ``message_type`` is read from the message when it is JSON.
20. **Dict changes** keep key order: ``change_value`` keeps the key's place, ``add`` appends
    (the compact JSON, and thus ``preview``, follows insertion order).
21. **String history is also bounded per space**: besides each topic's last 100 changes,
    the insertions kept by all string histories of a space total at most 4 Mi code points
    (``max_history_chars``); beyond, the topic being edited forgets its oldest changes first
    (never its newest), and a change made against a forgotten version is ``bad_version``.
    Deletions are kept by position and length only. Without this, cycling 1 MiB inserts and
    deletes could make a space hold 100 MiB per topic that no size limit counts. Ordinary
    editing (keystrokes, pastes) never reaches it.
22. **Queued changes are bounded per space** too: changes waiting behind a validation hold
    at most 16 MiB of compact JSON in a space (``max_waiting_bytes``); a change that would
    exceed it is ``rate_limited`` at once, like the 101st waiting change of a topic. (A
    change is size-checked only at its turn, so without this a client holding 1,000
    validators could park 100 messages of 4 MiB behind each.)
"""

from __future__ import annotations

from .actions import (
    ERRORS_TOTAL,
    MESSAGES_IN_TOTAL,
    SERVICE_REQUESTS_TOTAL,
    Action,
    Counted,
    Deliver,
)
from .entropy import Entropy, SeededEntropy, SystemEntropy, uuid4
from .frames import SHAPES, ServerFrame, Shape, render
from .names import check_space_key, is_valid_space_name, space_from_query, space_key
from .settings import SpaceSettings
from .space import Space

__all__ = [
    "ERRORS_TOTAL",
    "MESSAGES_IN_TOTAL",
    "SERVICE_REQUESTS_TOTAL",
    "SHAPES",
    "Action",
    "Counted",
    "Deliver",
    "Entropy",
    "SeededEntropy",
    "ServerFrame",
    "Shape",
    "Space",
    "SpaceSettings",
    "SystemEntropy",
    "check_space_key",
    "is_valid_space_name",
    "render",
    "space_from_query",
    "space_key",
    "uuid4",
]
