"""Coverage-guided fuzzing (atheris) of the relay's edge parsers.

Each harness module (``ws_frames``, ``observer_codecs``, ``http_head``) exposes
``check(data: bytes) -> None``, which raises ``AssertionError`` (or whatever the code under
test raised) when an invariant breaks, and a ``main()`` that hands ``check`` to atheris.
The modules import atheris only inside ``main()``, so ``tests/test_corpus.py`` can replay
``tests/corpus/<target>/`` through the very same ``check`` without atheris installed.
``python -m fuzz.run`` runs every harness in its own process (libFuzzer owns the process it
runs in) and files crashing inputs under ``tests/corpus/<target>/<sha1>``.
"""

#: Harness module name → corpus directory name under ``tests/corpus/`` (the same).
TARGETS = ("ws_frames", "observer_codecs", "http_head")
