"""Same-host handoff: a client socket moves to the node that owns its room.

Behind a plain load balancer half of a room's students land on a node that does not own
the room, and every event of theirs then crosses Redis twice (``relay.cluster``). When
the owner runs on the same host — N processes on one machine is how Python uses N cores —
the node that accepted the connection can instead pass the socket itself to the owner
(``SCM_RIGHTS`` over a Unix socket in the abstract namespace, which only processes of the
same host and network namespace can reach) at the connection's first ``room/join``,
``room/rejoin`` or ``room/rehost``. The owner then serves it as its own, and the
connection never touches the backplane's forwarding path again.

Only a connection in a clean state moves: no room yet, nothing queued to write, nothing
read past the joining frame (the handoff carries the decoded event, not raw bytes). The
Socket.IO session (sid, namespace) travels with it. Once the descriptor is sent the
giving node lets go of the socket whatever happens; before that, any failure (another
host, an old node, a full owner) falls back to forwarding. The receiving node accepts
descriptors only from processes of its own user and reads the client's address from the
socket itself.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from relay.ports import ClusterHost, Ref

from .wire import payload_text, payload_value

log = logging.getLogger("relay.handoff")

MAX_STATE = 256 * 1024  # the joining event is small; a bigger one is forwarded instead
GIVE_TIMEOUT = 2.0
NOT_LOCAL_FOR = 60.0  # how long a node that could not be reached is not tried again


def address(node_id: str) -> bytes:
    return b"\0observer-relay-handoff/" + node_id.encode()


class HandoffState(msgspec.Struct, array_like=True, frozen=True):
    """What travels with the socket: the joining event (its payload as JSON text, so
    any integer a client sent survives) and the Socket.IO session."""

    endpoint: str
    event: str
    data: bytes
    ref: Ref | None
    sid: str | None
    socket_sid: str | None
    device: str | None = None  # the device digest the connection carries (§4.6)
    ip: str | None = None  # the client IP as the giver established it (trusted proxies)
    #: An HTTP request to answer as if the socket had been accepted here (its head and
    #: what followed it): an Engine.IO upgrade for a polling session of the receiver.
    request: bytes = b""


_decode_state = msgspec.msgpack.Decoder(HandoffState).decode


class Handoff:
    """This node's end: ``serve`` receives sockets, ``give`` passes one on."""

    def __init__(self, host: ClusterHost, node_id: str) -> None:
        self.host = host
        self.node_id = node_id
        self._not_local: dict[str, float] = {}

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await listener.bind(address(self.node_id))
            listener.listen(128)
        except OSError as exc:  # not Linux, or the name is taken: forwarding only
            log.warning("same-host handoff is off: %s", exc)
            listener.close()
            task_status.started()
            return
        task_status.started()
        with listener:
            async with trio.open_nursery() as nursery:
                while True:
                    sock, _ = await listener.accept()
                    nursery.start_soon(self._take_guarded, sock)

    async def _take_guarded(self, sock: trio.socket.SocketType) -> None:
        try:
            await self._take(sock)
        except Exception:
            log.exception("taking over a handed-off connection failed")

    async def _take(self, sock: trio.socket.SocketType) -> None:
        with sock:
            try:
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
                if struct.unpack("3i", creds)[1] != os.getuid():
                    return  # only our own user's processes may hand us sockets
                with trio.fail_after(GIVE_TIMEOUT):
                    blob, fd = await _recv_with_fd(sock)
                try:
                    state = _decode_state(blob)
                    data = payload_value(state.data)
                    if self.host.shutting_down:
                        raise ValueError("shutting down")  # the client reconnects elsewhere
                except BaseException:
                    os.close(fd)
                    raise
            except (OSError, trio.TooSlowError, ValueError, RecursionError, TypeError):
                return  # msgspec.DecodeError is a ValueError
            with contextlib.suppress(OSError):
                await sock.send(b"k")  # the giver has let go either way
        if state.request:
            await self.host.adopt_http(fd, state.request)
            return
        session = {"sid": state.sid, "socket_sid": state.socket_sid,
                   "device": state.device, "ip": state.ip}
        await self.host.adopt(fd, state.endpoint, session, state.event, data, state.ref)

    async def give(self, owner: str, conn: Any, event: str, data: Any,
                   ref: Ref | None) -> bool:
        """Pass ``conn``'s socket to ``owner``; True once it is gone from this node, False
        (forward instead) when it cannot move or ``owner`` is not reachable here."""
        if not conn.clean:
            return False
        sid, socket_sid = conn.codec.session_ids()
        state = HandoffState(conn.endpoint, event, payload_text(data), ref, sid, socket_sid,
                             conn.session.device, conn.ip)
        return await self._give(owner, state, conn.fd, conn.hand_off)

    async def give_request(self, owner: str, fd: int, request: bytes) -> bool:
        """Pass a socket whose request ``owner`` must answer (an upgrade for one of its
        polling sessions); True once it is gone from this node (the caller then only
        closes its descriptor), False when ``owner`` is not reachable here."""
        state = HandoffState("http", "", b"null", None, None, None, request=request)
        return await self._give(owner, state, fd, lambda: None)

    async def _give(self, owner: str, state: HandoffState, fd: int,
                    let_go: Callable[[], None]) -> bool:
        until = self._not_local.get(owner)
        if until is not None and trio.current_time() < until:
            return False
        blob = msgspec.msgpack.encode(state)
        if len(blob) > MAX_STATE:
            return False
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            try:
                with trio.fail_after(GIVE_TIMEOUT):
                    await sock.connect(address(owner))
            except (OSError, trio.TooSlowError):
                self._not_local[owner] = trio.current_time() + NOT_LOCAL_FOR
                return False
            try:
                with trio.fail_after(GIVE_TIMEOUT):
                    await sock.sendmsg([blob], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                 array.array("i", [fd]))])
            except (OSError, trio.TooSlowError):
                return False  # not sent: still ours
            # From here the owner may be serving the socket: let go of it, whatever
            # the answer (without one, the client sees a dead connection and resumes).
            let_go()
            with trio.move_on_after(GIVE_TIMEOUT):
                try:
                    await sock.recv(1)
                except OSError:
                    pass
        return True


async def _recv_with_fd(sock: trio.socket.SocketType) -> tuple[bytes, int]:
    """One state message and the descriptor sent with it (the sender sends both at once,
    then waits for our answer). The descriptor is closed again if anything is wrong."""
    chunks: list[bytes] = []
    fd = -1
    size = 0
    try:
        while True:
            data, ancdata, _, _ = await sock.recvmsg(65536, socket.CMSG_SPACE(4))
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and fd < 0:
                    fds = array.array("i")
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                    fd = fds[0] if fds else -1
            if not data:
                raise ValueError("the state was cut short")
            chunks.append(data)
            size += len(data)
            if size > MAX_STATE:
                raise ValueError("state too large")
            try:
                msgspec.msgpack.decode(b"".join(chunks))
                break  # complete
            except msgspec.DecodeError:
                continue
        if fd < 0:
            raise ValueError("no descriptor")
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return b"".join(chunks), fd
