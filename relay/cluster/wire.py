"""What nodes write to Redis and send each other: typed messages, one decoder each.

Everything a node reads back from Redis — its rooms' log entries, their snapshots, the
messages other nodes publish to its inbox — is untrusted input as far as this process is
concerned (another version of the relay, a bug, or anyone who can write to Redis may have
put it there). So every such blob is a msgspec ``Struct`` with a format version, decoded
by a typed decoder that refuses anything else; nothing is unpickled, and no value a client
sent reaches msgpack unvalidated: client payloads travel as their JSON text (``bytes``),
which carries integers of any size and is decoded with the same rules as on the socket.

Messages are array-like (a list, not a map, on the wire) and tagged, so a message costs a
few bytes of framing; a log entry is a ``LogRecord`` envelope with the format version.
"""

from __future__ import annotations

from typing import Any

import msgspec

FORMAT = 1  # bumped when a log entry, snapshot or node message changes incompatibly

Ref = int | str


# -- the room log ------------------------------------------------------------------------
class Command(msgspec.Struct, array_like=True, tag="cmd", frozen=True):
    """A client event for the room, as the owner applied it: replaying it gives the same
    room (same ids and tokens from ``seed``, same timestamps from ``time``)."""

    ip: str
    room: int | None  # the sender's binding when it sent the event
    user: int | None
    blocked: bool | None  # the per-IP limit as the client's node decided it
    event: str
    data: bytes  # the payload's JSON text
    seed: bytes
    time: float
    framing: str = "observer"  # "observer" (plain) or "socketio"
    device: str | None = None  # a digest of the device cookie (§4.6), never the cookie


class Disconnected(msgspec.Struct, array_like=True, tag="disc", frozen=True):
    """A participant's connection ended (it goes offline)."""

    ip: str
    room: int
    user: int
    time: float


class ImportDone(msgspec.Struct, array_like=True, tag="imp", frozen=True):
    """A background Notion import finished: its tasks, or why it failed."""

    failure: str | None
    tasks: list[dict[str, str]] | None
    time: float


Entry = Command | Disconnected | ImportDone


class LogRecord(msgspec.Struct, array_like=True, frozen=True):
    """One entry of a room's log. ``cmd`` names the command uniquely (node id + counter):
    after an append whose outcome was lost, the owner finds out whether it landed by
    reading the log back and looking for it."""

    version: int
    cmd: bytes
    entry: Entry


# -- node to node (inbox messages) -------------------------------------------------------
class Forward(msgspec.Struct, array_like=True, tag="fwd", frozen=True):
    """A client event forwarded by the client's node to the room's owner."""

    node: str  # the client's node
    conn: int  # its id for the connection
    n: int  # commands of this connection forwarded so far, this one included
    wait: int  # nonzero: the client's node waits for a ``Result`` with this id
    endpoint: str
    ip: str
    room: int | None
    user: int | None
    blocked: bool | None
    event: str
    data: bytes  # JSON text
    ref: Ref | None
    framing: str = "observer"
    device: str | None = None


class Frames(msgspec.Struct, array_like=True, tag="f", frozen=True):
    """Encoded WebSocket frames for one of the receiving node's connections."""

    conn: int
    frames: bytes


class Close(msgspec.Struct, array_like=True, tag="x", frozen=True):
    """Close one of the receiving node's connections (the owner already handled its
    participant: replaced, kicked, room closed, lost)."""

    conn: int
    code: int
    reason: str
    flush: bool


class Result(msgspec.Struct, array_like=True, tag="r", frozen=True):
    """The outcome of a waited ``Forward``: the connection's binding afterwards."""

    wait: int
    room: int | None
    user: int | None
    error: str | None


class Gone(msgspec.Struct, array_like=True, tag="g", frozen=True):
    """One of the sending node's forwarded connections ended."""

    node: str
    conn: int


class WsForward(msgspec.Struct, array_like=True, tag="wf", frozen=True):
    """A ``/ws`` message for a signaling room that lives on the receiving node."""

    node: str
    conn: int
    wait: int
    text: str | None
    binary: bool
    ip: str = ""  # the client's (its failed joins count on the room's node, §7)


class WsResult(msgspec.Struct, array_like=True, tag="wr", frozen=True):
    wait: int
    in_room: bool


class WsGone(msgspec.Struct, array_like=True, tag="wg", frozen=True):
    node: str
    conn: int


class HttpForward(msgspec.Struct, array_like=True, tag="hf", frozen=True):
    """An Engine.IO polling request for a session that lives on the receiving node."""

    node: str
    wait: int
    method: str
    query: str
    headers: list[tuple[str, str]]  # the fields the session's answer depends on
    body: bytes
    ip: str


class HttpAnswer(msgspec.Struct, array_like=True, tag="ha", frozen=True):
    wait: int
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class HttpAck(msgspec.Struct, array_like=True, tag="hk", frozen=True):
    """Whether the answer reached the client (its packets are delivered, or go again)."""

    node: str  # the client's node (the one that forwarded the request)
    wait: int
    written: bool


Message = (Forward | Frames | Close | Result | Gone | WsForward | WsResult | WsGone
           | HttpForward | HttpAnswer | HttpAck)


class PlaceCommand(msgspec.Struct, array_like=True, frozen=True):
    """A command for a replicated place: a ChatRoom space, or the chat app's directory.

    Every node applies the places' commands in the order of one Redis stream, each to its
    own replica (same commands, seeds and times: same state everywhere), and delivers what
    a command produces to its own connections only. ``node``/``conn`` name the connection a
    command concerns (the node that appended it).
    """

    kind: str  # "space" or "chat"
    place: str  # the space's name, or "directory"
    op: str  # space: connect, receive, binary, disconnect, tick, expire, node_gone;
    #          chat: handle, disconnect, node_gone
    node: str
    conn: int
    arg: str  # a space connection's shape; a chat event's name
    text: str | None  # a space message; a chat event's payload (JSON text)
    seed: bytes
    time: float
    seq: int = 0  # the issuing node's counter (set by the cluster: resends apply once)
    version: int = FORMAT


class Batch(msgspec.Struct, array_like=True, frozen=True):
    """What one ``PUBLISH`` carries: a sender's queued messages, in order."""

    version: int
    messages: list[Message]


_encoder = msgspec.msgpack.Encoder()
_record = msgspec.msgpack.Decoder(LogRecord)
_place = msgspec.msgpack.Decoder(PlaceCommand)
_batch = msgspec.msgpack.Decoder(Batch)


class WireError(ValueError):
    """A blob read from Redis is not something this version wrote."""


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def encode_record(cmd: bytes, entry: Entry) -> bytes:
    return _encoder.encode(LogRecord(FORMAT, cmd, entry))


def decode_record(blob: bytes) -> LogRecord:
    try:
        record = _record.decode(blob)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"unreadable log entry: {exc}") from None
    if record.version != FORMAT:
        raise WireError(f"log entry of format {record.version}, expected {FORMAT}")
    return record


def encode_place(command: PlaceCommand) -> bytes:
    return _encoder.encode(command)


def decode_place(blob: bytes) -> PlaceCommand:
    try:
        command = _place.decode(blob)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"unreadable place command: {exc}") from None
    if command.version != FORMAT:
        raise WireError(f"place command of format {command.version}, expected {FORMAT}")
    return command


def encode_batch(messages: list[Message]) -> bytes:
    return _encoder.encode(Batch(FORMAT, messages))


def decode_batch(blob: bytes) -> list[Message]:
    try:
        batch = _batch.decode(blob)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"unreadable node message: {exc}") from None
    if batch.version != FORMAT:
        raise WireError(f"node message of format {batch.version}, expected {FORMAT}")
    return batch.messages


_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


def payload_text(data: Any) -> bytes:
    """A client payload as JSON text (integers of any size survive the trip)."""
    return _json_encode(data)


def payload_value(text: bytes) -> Any:
    """The payload back from its JSON text (it was a decoded client value once)."""
    return _json_decode(text)
