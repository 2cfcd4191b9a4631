"""Benchmarks: a raw-socket load generator, a python-socketio reference server and a runner.

Run ``python -m bench.run --quick`` (or ``make bench`` for the full set); see
``docs/performance.md``.
"""
