"""Group commit: appends ready at the same moment share one call, in order; their ``done``
callbacks run in submission order before the next call; a full queue makes ``submit`` wait;
failures reach every waiter of their batch; stopping fails whoever still waits. Real Redis
round trips are covered by tests/test_cluster.py; here the batching logic itself, with a
recording ``append_many``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import trio

from relay.backplane.group_commit import GroupCommit


class Log:
    def __init__(self) -> None:
        self.calls: list[list[tuple[str, bytes]]] = []
        self.fail: Exception | None = None
        self.fenced: set[bytes] = set()  # entries Redis would refuse (their lease moved)
        self.gate = trio.Event()

    async def append_many(self, entries: Sequence[tuple[str, str, bytes]]) -> list[str | None]:
        self.calls.append([(room, entry) for room, _, entry in entries])
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [None if entry in self.fenced else f"{len(self.calls)}-{i}"
                for i, (_, _, entry) in enumerate(entries)]


async def commit_entry(commits: GroupCommit, room: str, entry: bytes) -> str:
    return await commits.commit(room, "node/1", entry, str)


async def test_appends_during_a_round_trip_go_together_in_order() -> None:
    log = Log()
    commits = GroupCommit(log.append_many)
    ids: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(commits.run)

        async def append(room: str, entry: bytes) -> None:
            ids[room + entry.decode()] = await commit_entry(commits, room, entry)

        nursery.start_soon(append, "a", b"1")
        await trio.testing.wait_all_tasks_blocked()
        for room, entry in (("b", b"1"), ("a", b"2"), ("c", b"1")):
            nursery.start_soon(append, room, entry)
            await trio.testing.wait_all_tasks_blocked()
        log.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert log.calls == [[("a", b"1")], [("b", b"1"), ("a", b"2"), ("c", b"1")]]
    assert ids == {"a1": "1-0", "b1": "2-0", "a2": "2-1", "c1": "2-2"}


async def test_a_failed_batch_fails_each_waiter_and_stopping_fails_the_rest() -> None:
    log = Log()
    log.fail = ConnectionError("gone")
    commits = GroupCommit(log.append_many, lambda: LookupError("stopped"))
    errors: list[BaseException] = []

    async def append(entry: bytes) -> None:
        # Shielded: only the batch's answer or ``run`` ending releases it.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
            try:
                await commit_entry(commits, "r", entry)
            except Exception as exc:  # recorded for the assertions
                errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commits.run)
        nursery.start_soon(append, b"1")
        nursery.start_soon(append, b"2")
        await trio.testing.wait_all_tasks_blocked()
        log.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert [type(e) for e in errors] == [ConnectionError, ConnectionError]
        log.gate = trio.Event()  # the next round trip never answers
        nursery.start_soon(append, b"3")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert type(errors[-1]) is LookupError


@pytest.mark.parametrize("n", [1, 600])
async def test_large_queues_are_split_into_bounded_calls(n: int) -> None:
    log = Log()
    log.gate.set()
    commits = GroupCommit(log.append_many)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(commits.run)
        async with trio.open_nursery() as appends:
            for i in range(n):
                appends.start_soon(commit_entry, commits, "r", str(i).encode())
        nursery.cancel_scope.cancel()
    assert sum(len(c) for c in log.calls) == n
    assert max(len(c) for c in log.calls) <= 512


async def test_done_callbacks_run_in_order_before_the_next_batch_is_sent() -> None:
    log = Log()
    commits = GroupCommit(log.append_many)
    seen: list[str] = []

    def done(name: str) -> object:
        def callback(stream_id: str) -> None:
            # Applied strictly after its own call and before the following one went out.
            seen.append(f"{name}@{stream_id} calls={len(log.calls)}")
            if name == "x2":
                raise RuntimeError("a buggy command")  # must not stop the committer
        return callback

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commits.run)
        await commits.submit("a", "f", b"1", done("x1"), seen.append)
        await trio.testing.wait_all_tasks_blocked()
        for name in ("x2", "x3"):  # queued while the first call is in flight
            await commits.submit("b", "f", name.encode(), done(name), seen.append)
        assert commits.pending == 2
        log.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert seen == ["x1@1-0 calls=1", "x2@2-0 calls=2", "x3@2-1 calls=2"]


async def test_a_full_queue_makes_submit_wait() -> None:
    log = Log()
    commits = GroupCommit(log.append_many, max_queue=2)
    submitted: list[int] = []

    async def submit(i: int) -> None:
        await commits.submit("r", "f", str(i).encode(), lambda _: None, lambda _: None)
        submitted.append(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commits.run)
        await submit(0)
        await trio.testing.wait_all_tasks_blocked()  # 0 is in flight, the queue is empty
        for i in (1, 2, 3):
            nursery.start_soon(submit, i)
            await trio.testing.wait_all_tasks_blocked()
        assert submitted == [0, 1, 2]  # 3 waits for space
        log.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert submitted == [0, 1, 2, 3]
        nursery.cancel_scope.cancel()
    assert [len(c) for c in log.calls] == [1, 2, 1]


async def test_every_entry_gets_one_truthful_outcome() -> None:
    """Appended → done; refused by its fence → failed(Fenced); no answer → unknown, and
    the rooms of that batch are blocked (later entries failed unsent) until unblocked."""
    from relay.backplane.group_commit import RoomBlocked
    from relay.backplane.redis import Fenced, OutcomeUnknown

    log = Log()
    log.fenced.add(b"moved")
    commits = GroupCommit(log.append_many)
    outcomes: list[tuple[str, str]] = []

    def record(name: str) -> tuple[Any, Any, Any]:
        return (lambda sid: outcomes.append((name, "done")),
                lambda exc: outcomes.append((name, type(exc).__name__)),
                lambda exc: outcomes.append((name, "unknown:" + type(exc).__name__)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commits.run)
        await commits.submit("a", "f", b"ok", *record("ok"))
        await commits.submit("b", "f", b"moved", *record("moved"))
        log.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes == [("ok", "done"), ("moved", Fenced.__name__)]
        log.fail = OutcomeUnknown("no answer")
        await commits.submit("a", "f", b"lost", *record("lost"))
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes[-1] == ("lost", "unknown:OutcomeUnknown")
        assert commits.blocked == {"a"}
        log.fail = None
        sent = len(log.calls)
        await commits.submit("a", "f", b"later", *record("later"))  # refused, not sent
        await commits.submit("c", "f", b"other", *record("other"))  # other rooms go on
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes[-2:] == [("later", RoomBlocked.__name__), ("other", "done")]
        assert [entry for call in log.calls[sent:] for _, entry in call] == [b"other"]
        commits.unblock("a")
        await commits.submit("a", "f", b"again", *record("again"))
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes[-1] == ("again", "done")
        nursery.cancel_scope.cancel()
