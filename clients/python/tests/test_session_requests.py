"""What Session sends, against an in-process fake of the two services (no engine): the
session_id / save_session_as of each send and fork, and the snapshot chunks of export and import.

The real server's session behaviour is tested in test_sessions.py; this pins the client's side of
the contract (sessions.proto, GenerateRequest.session_id / save_session_as) on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from hgrn2_client import Client, NotFoundError
from hgrn2_client._proto import inference_pb2 as pb
from hgrn2_client._proto import inference_pb2_grpc as pb_grpc
from hgrn2_client._proto import sessions_pb2 as spb
from hgrn2_client._proto import sessions_pb2_grpc as spb_grpc


class FakeServer(pb_grpc.InferenceServicer, spb_grpc.SessionsServicer):  # type: ignore[misc]
    """Records Generate requests and keeps sessions as bytes; every generation is one token."""

    def __init__(self) -> None:
        self.requests: list[pb.GenerateRequest] = []
        self.store: dict[str, bytes] = {}
        self.routed: list[tuple[str, str]] = []  # (method, session-id metadata or "")
        self.if_revisions: list[int | None] = []  # of each import's first chunk

    def route(self, method: str, context: grpc.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata())
        self.routed.append((method, metadata.get("session-id", "")))

    def Generate(self, request: pb.GenerateRequest, context: grpc.ServicerContext) -> Iterator[pb.GenerateResponse]:
        self.requests.append(request)
        self.route("Generate", context)
        if request.session_id and request.session_id not in self.store:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.session_id}")
        if request.save_session_as:
            self.store[request.save_session_as] = self.store.get(request.session_id, b"") + b"x"
        yield pb.GenerateResponse(token_ids=[7], text="a", logprobs=[pb.TokenLogprob(token_id=7)])
        yield pb.GenerateResponse(finish_reason=pb.LENGTH, usage=pb.Usage(generated_tokens=1))

    def GetSession(self, request: spb.GetSessionRequest, context: grpc.ServicerContext) -> spb.SessionInfo:
        self.route("GetSession", context)
        if request.session_id not in self.store:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.session_id}")
        data = self.store[request.session_id]
        return spb.SessionInfo(session_id=request.session_id, num_tokens=len(data), size_bytes=len(data))

    def ExportSession(self, request: spb.ExportSessionRequest, context: grpc.ServicerContext) -> Iterator[spb.SessionChunk]:
        data = self.store[request.session_id]
        for i in range(0, len(data), 3):  # small chunks: the client must join them in order
            yield spb.SessionChunk(session_id=request.session_id if i == 0 else "", data=data[i : i + 3])

    def ImportSession(self, chunks: Iterator[spb.SessionChunk], context: grpc.ServicerContext) -> spb.SessionInfo:
        received = list(chunks)
        assert received[0].session_id and all(not c.session_id for c in received[1:])
        assert all(not c.HasField("if_revision") for c in received[1:])
        self.if_revisions.append(received[0].if_revision if received[0].HasField("if_revision") else None)
        self.store[received[0].session_id] = b"".join(c.data for c in received)
        return self.GetSession(spb.GetSessionRequest(session_id=received[0].session_id), context)


@pytest.fixture
def fake() -> Iterator[tuple[FakeServer, Client]]:
    """A FakeServer on a free port and a client of it."""
    servicer = FakeServer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
    spb_grpc.add_SessionsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with Client(f"127.0.0.1:{port}", timeout=10) as client:
        yield servicer, client
    server.stop(None)


def sent(servicer: FakeServer) -> list[tuple[str, str]]:
    """(session_id, save_session_as) of each Generate request so far."""
    return [(r.session_id, r.save_session_as) for r in servicer.requests]


def test_send_reads_then_saves_and_fork_reads_the_parent(fake: tuple[FakeServer, Client]) -> None:
    servicer, client = fake
    chat = client.session("a")
    assert chat.send("hi").token_ids == [7]
    chat.send("again")
    chat.fork("b").send("branch")
    client.session("b").send("resumed")  # a new handle on an existing session reads it
    assert sent(servicer) == [("", "a"), ("a", "a"), ("a", "b"), ("b", "b")]
    assert servicer.store == {"a": b"xx", "b": b"xxxx"}
    assert servicer.requests[0].text == "hi" and not servicer.requests[0].HasField("add_special_tokens")


def test_export_import_and_errors(fake: tuple[FakeServer, Client], tmp_path: Path) -> None:
    servicer, client = fake
    servicer.store["s"] = b"0123456789"
    assert client.session("s").export(tmp_path / "s.bin") == 10
    assert (tmp_path / "s.bin").read_bytes() == b"0123456789"
    info = client.session("t").import_(tmp_path / "s.bin")
    assert (info.session_id, info.size_bytes) == ("t", 10) and servicer.store["t"] == b"0123456789"
    with pytest.raises(NotFoundError) as missing:
        client.session("nope").info()
    assert missing.value.details == "no session nope"


def test_calls_name_their_session_for_routing(fake: tuple[FakeServer, Client], tmp_path: Path) -> None:
    """Each call about a session sends ``session-id: <id>`` (the one it resumes, else the one it
    saves), so a proxy hashing on it sends a conversation to the replica that has it cached."""
    servicer, client = fake
    chat = client.session("a")
    chat.send("hi")  # looks "a" up first (not found), then saves it
    chat.send("again")
    chat.fork("b").send("branch")  # reads "a": routed by "a"
    client.generate("no session")
    assert servicer.routed == [
        ("GetSession", "a"),
        ("Generate", "a"),
        ("Generate", "a"),
        ("Generate", "a"),
        ("Generate", ""),
    ]
    (tmp_path / "s.bin").write_bytes(b"x")
    client.import_session("c", tmp_path / "s.bin", if_revision=4)
    client.import_session("d", tmp_path / "s.bin")
    client.import_session("e", tmp_path / "s.bin", if_revision=0)
    assert servicer.if_revisions == [4, None, 0]
