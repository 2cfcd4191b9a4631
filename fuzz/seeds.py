"""Write the seed inputs of each harness to ``tests/corpus/<target>/<sha1>``.

``python -m fuzz.seeds`` (idempotent). The seeds are the attacks the relay suffered and
well-formed inputs for the fuzzer to mutate from: coverage guidance alone would take long
to build a thousand nested brackets or a valid WebSocket handshake. Each file is one raw
harness input, control byte included (see each harness's docstring).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .run import CORPUS

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame with an all-zero mask (the payload stays readable)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def handshake(*, method: bytes = b"GET", version: bytes = b"1.1", key: bytes = KEY,
              extra: bytes = b"", path: bytes = b"/observer") -> bytes:
    return (method + b" " + path + b" HTTP/" + version + b"\r\nHost: relay\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
            + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")


def codec_seeds() -> list[bytes]:
    deep = _deep(1000)
    return [
        b'{"event":"room/create","data":{"name":"Ann"},"ref":7}',
        b'{"event":"x","data":' + deep + b"}",
        b'{"event":"x","ref":9007199254740992}',
        b'{"event":"x","data":[1e400, 123456789012345678901234567890, -0.0]}',
        b'{"event":"a","event":"b","data":NaN}',
        b'{"event":"\\ud800"}',
        b"40",
        b'40{"token":"abc"}',
        b"40" + b'{"a":' * 1000,
        b'42["message/to_mentor",{"content":"Help!"}]',
        b"4217" + deep,
        b'4207["x",' + deep + b"]",
        b'451-12["x",{"_placeholder":true,"num":0}]',
        b'42/chat,3["x"]',
        b"2probe",
        b"421" + b"9" * 40 + b'["x"]',
    ]


def http_seeds() -> list[bytes]:
    frame = masked(1, b'{"event":"x"}')
    big = b"X-Pad: " + b"a" * 60_000 + b"\r\n"
    heads = [
        handshake() + frame,
        handshake(path=b"/socket.io/?EIO=4&transport=websocket"),
        handshake(key="dGhlIHNhbXBsZSBub25jZ\xe9==".encode("latin-1")),
        handshake(method=b"POST"),
        handshake(version=b"1.0"),
        handshake(extra=b"Content-Length: 5\r\n") + b"hello",
        handshake(extra=b"Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
        handshake(extra=b"Sec-WebSocket-Key: " + KEY + b"\r\n"),
        b"GET //[ HTTP/1.1\r\nHost: relay\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
        handshake()[:60],
    ]
    # Control bytes: one read and EOF; reads of 16 bytes and EOF; one read, then hang.
    seeds = [bytes([control]) + head for head in heads for control in (0x00, 0x20, 0x04)]
    return [*seeds, b"\x00" + handshake(extra=big)]  # the 60 KB head, in one read


def frame_seeds() -> list[bytes]:
    text = masked(1, b"hello")
    fragmented = masked(1, b"hel", fin=False) + masked(9, b"p") + masked(0, b"lo")
    streams = [
        text + masked(9, b"ping") + masked(10, b"") + masked(8, b"\x03\xe8bye"),
        fragmented + masked(2, bytes(300)),
        masked(1, b"\xff\xfe"),
        masked(1, b"x" * 5000),
        masked(8, b"\x03"),
        bytes((0x81, 0xFF)) + (300).to_bytes(8, "big") + b"\0\0\0\0",
        masked(0, b"orphan"),
    ]
    return [bytes([control]) + s for s in streams for control in (0x00, 0x03, 0x41, 0x81)]


def write(target: str, inputs: list[bytes]) -> int:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for data in inputs:
        (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(inputs)


def main() -> None:
    counts = {
        "ws_frames": write("ws_frames", frame_seeds()),
        "observer_codecs": write("observer_codecs", codec_seeds()),
        "http_head": write("http_head", http_seeds()),
    }
    for target, n in counts.items():
        print(f"{n} seeds in {Path(os.path.relpath(CORPUS / target))}")


if __name__ == "__main__":
    main()
