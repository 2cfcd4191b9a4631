"""Helpers shared by the harnesses: reading server frames back, splitting inputs, atheris.

Reading server frames back is done here rather than with wsproto so that the harnesses
check the exact wire form (one unfragmented, unmasked text frame per message, shortest
length encoding) with nothing but the standard library.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def server_texts(data: bytes) -> list[str]:
    """The text messages of server frame bytes; AssertionError unless they are well formed.

    Well formed means what ``relay.codecs.wsframe.text_frame`` promises: FIN set, no
    reserved bits, opcode text, no mask, the shortest length encoding, UTF-8 payload, and
    nothing left over.
    """
    texts: list[str] = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 2, "truncated frame head"
        b0, b1 = data[pos], data[pos + 1]
        assert b0 == 0x81, f"not a final unextended text frame: {b0:#x}"
        assert not b1 & 0x80, "server frames are not masked"
        n, head = b1 & 0x7F, pos + 2
        if n == 126:
            n, head = int.from_bytes(data[head:head + 2], "big"), head + 2
            assert n >= 126, "length not in its shortest form"
        elif n == 127:
            n, head = int.from_bytes(data[head:head + 8], "big"), head + 8
            assert 0x10000 <= n < 1 << 63, "length not in its shortest form"
        assert head + n <= len(data), "truncated frame payload"
        texts.append(data[head:head + n].decode("utf-8"))
        pos = head + n
    return texts


def server_text(data: bytes) -> str:
    """The one text message of ``data``."""
    texts = server_texts(data)
    assert len(texts) == 1, texts
    return texts[0]


def fuzzed_text(data: bytes) -> str:
    """A ``str`` for a codec from fuzzer bytes.

    UTF-8 with ``surrogatepass`` (so encoded lone surrogates become ``str`` surrogates, which
    the frame reader never delivers but the codecs must still survive); bytes that are not
    UTF-8 at all are read as Latin-1 so that every byte sequence yields some text.
    """
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def split(data: bytes, size: int) -> list[bytes]:
    """``data`` in pieces of ``size`` bytes (one piece for ``size`` 0); never an empty piece
    unless ``data`` is empty."""
    if size <= 0 or not data:
        return [data]
    return [data[i:i + size] for i in range(0, len(data), size)]


def fuzz_main(check: Callable[[bytes], None]) -> None:
    """Run ``check`` under atheris with the process's command line (libFuzzer flags).

    Everything already imported (the code under test, through the harness module) is
    instrumented for coverage; atheris is imported here only, so importing a harness never
    needs it.
    """
    import atheris  # optional dependency (the fuzz extra), needed only to fuzz

    atheris.instrument_all()
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
