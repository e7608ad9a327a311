"""Sessions through the client (sessions.proto): continue-and-save, fork, export/import, list/delete."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hgrn2_client import (
    AbortedError,
    Client,
    InvalidArgumentError,
    NotFoundError,
    SamplingOptions,
)

GREEDY: SamplingOptions = {"max_new_tokens": 8, "temperature": 0, "ignore_eos": True}


def new_id() -> str:
    """A session id no other test uses."""
    return f"test-{uuid.uuid4().hex[:10]}"


def test_send_twice_equals_one_generate(sessions: Client) -> None:
    session = sessions.session(new_id())
    first = session.send([1, 17, 42], **GREEDY)
    second = session.send([5, 6], **GREEDY)
    whole = sessions.generate([1, 17, 42, *first.token_ids, 5, 6], **GREEDY)
    assert second.token_ids == whole.token_ids
    assert session.info().num_tokens == 3 + 8 + 2 + 8
    session.delete()


def test_fork_leaves_the_parent(sessions: Client) -> None:
    parent = sessions.session(new_id())
    parent.send([1, 17, 42], **GREEDY)
    child = parent.fork(new_id())
    a = child.send([9], **GREEDY)
    b = parent.send([9], **GREEDY)
    assert a.token_ids == b.token_ids  # the fork read the parent's state, which stayed as it was
    child.delete()
    parent.delete()


def test_export_import_round_trip(sessions: Client, tmp_path: Path) -> None:
    session = sessions.session(new_id())
    session.send([1, 17, 42], **GREEDY)
    path = tmp_path / "s.snapshot"
    written = session.export(path)
    assert written == path.stat().st_size == session.info().size_bytes
    copy = sessions.session(new_id())
    info = copy.import_(path)
    assert info.num_tokens == session.info().num_tokens
    assert copy.send([5], **GREEDY).token_ids == session.send([5], **GREEDY).token_ids
    copy.delete()
    session.delete()


def test_list_pages_through_every_session(sessions: Client) -> None:
    created = [sessions.session(new_id()) for _ in range(3)]
    for session in created:
        session.send([1, 2, 3], **GREEDY)
    everything = [s.session_id for s in sessions.list_sessions()]
    assert everything == sorted(everything)
    assert {s.id for s in created} <= set(everything)
    assert [s.session_id for s in sessions.list_sessions(page_size=1)] == everything
    with pytest.raises(InvalidArgumentError, match="page_size is -1"):
        sessions.list_sessions(page_size=-1)
    for session in created:
        session.delete()


def test_list_and_delete(sessions: Client) -> None:
    session = sessions.session(new_id())
    session.send([1, 2, 3], **GREEDY)
    assert session.id in [s.session_id for s in sessions.list_sessions()]
    session.delete()
    assert session.id not in [s.session_id for s in sessions.list_sessions()]
    with pytest.raises(NotFoundError):
        session.info()
    with pytest.raises(NotFoundError):
        sessions.delete_session(session.id)


def test_revisions_count_saves_and_guard_continuations(sessions: Client, tmp_path: Path) -> None:
    session = sessions.session(new_id())
    first = session.send([1, 17, 42], **GREEDY)
    assert (first.resumed_revision, first.saved_revision) == (0, 1)
    second = session.send([5], **GREEDY)
    assert (second.resumed_revision, second.saved_revision) == (1, 2)
    assert session.revision == 2 == session.info().revision
    assert sessions.score(None, [3, 4], session_id=session.id).session_revision == 2
    # A save that expects an older revision is refused, naming both; nothing changes.
    with pytest.raises(AbortedError, match="is at revision 2, not revision 1"):
        session.send([6], save_if_revision=1, **GREEDY)
    assert session.info().revision == 2
    assert session.send([6], save_if_revision=2, **GREEDY).saved_revision == 3
    with pytest.raises(InvalidArgumentError, match="save_overwrite"):
        session.send([6], save_if_revision=3, save_overwrite=True, **GREEDY)
    # Export carries the revision; an import keeps it, or takes the next one over a session.
    path = tmp_path / "s.snapshot"
    session.export(path)
    copy = sessions.session(new_id())
    assert copy.import_(path).revision == 3
    assert copy.revision == 3
    with pytest.raises(AbortedError, match="already exists"):
        sessions.import_session(copy.id, path, if_revision=0)
    assert sessions.import_session(copy.id, path, if_revision=3).revision == 4
    assert [s.revision for s in sessions.list_sessions() if s.session_id == copy.id] == [4]
    copy.delete()
    session.delete()
