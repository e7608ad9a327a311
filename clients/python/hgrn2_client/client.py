"""The synchronous client: Client (every RPC of hgrn2.v1) and Session (saved conversations)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import _convert
from ._channel import PathLike, TlsOption, metadata, open_channel
from ._proto import inference_pb2 as pb
from ._proto import inference_pb2_grpc as pb_grpc
from ._proto import sessions_pb2 as spb
from ._proto import sessions_pb2_grpc as spb_grpc
from .errors import NotFoundError, error_from_rpc
from .types import (
    GenerateResult,
    Prompt,
    ScoreResult,
    SessionInfo,
    StreamEnd,
    StreamEvent,
    TokenizeResult,
)

if TYPE_CHECKING:
    from typing import Unpack

    from .types import SamplingOptions

PathOrFile = str | Path | IO[bytes]


class Client:
    """A connection to hgrn2-server. Thread-safe; close() (or ``with``) releases the channel.

    Args:
        addr: ``host:port`` of the server.
        api_key: sent with every call as the metadata ``authorization: Bearer <key>``.
        tls: None/False for plaintext, True for TLS with the system's roots, or your own
            ``grpc.ChannelCredentials``.
        timeout: seconds for each call (a stream: the whole stream); None: no deadline.
        tls_ca: a PEM file of the CA certificates that sign the server's certificate (turns TLS
            on; the system's roots otherwise).
        tls_cert, tls_key: a PEM client certificate chain and its private key, for a server that
            requires client certificates (mutual TLS; turns TLS on).

    Every method raises :class:`~hgrn2_client.errors.Hgrn2Error` (a subclass by status code) when
    the call fails.
    """

    def __init__(
        self,
        addr: str = "localhost:50051",
        api_key: str | None = None,
        tls: TlsOption = None,
        timeout: float | None = None,
        *,
        tls_ca: PathLike | None = None,
        tls_cert: PathLike | None = None,
        tls_key: PathLike | None = None,
    ) -> None:
        self._channel = open_channel(grpc, addr, tls, tls_ca, tls_cert, tls_key)
        self._metadata = metadata(api_key)
        self._timeout = timeout
        self._inference = pb_grpc.InferenceStub(self._channel)  # type: ignore[no-untyped-call]
        self._sessions = spb_grpc.SessionsStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, session_id: str = "") -> Any:
        metadata = _convert.session_metadata(self._metadata, session_id)
        try:
            return method(request, timeout=self._timeout, metadata=metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    def _stream_request(self, request: pb.GenerateRequest) -> Iterator[StreamEvent]:
        metadata = _convert.session_metadata(self._metadata, _convert.request_session(request))
        call = self._inference.Generate(request, timeout=self._timeout, metadata=metadata)
        try:
            for response in call:
                yield from _convert.stream_events(response)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        finally:
            call.cancel()  # a consumer that stops early frees the server's sequence

    # --- generation -----------------------------------------------------------------------------

    def stream(self, prompt: Prompt, **options: Unpack[SamplingOptions]) -> Iterator[StreamEvent]:
        """Generates after ``prompt`` (text or token ids), yielding events as tokens arrive.

        Each sample yields :class:`StreamChunk` events (new ids and text), then one
        :class:`StreamEnd` (finish reason, usage). Closing the iterator early cancels the call.
        """
        return self._stream_request(_convert.generate_request(prompt, dict(options)))

    def generate(self, prompt: Prompt, **options: Unpack[SamplingOptions]) -> GenerateResult:
        """Generates after ``prompt`` (text or token ids) and returns the whole sample."""
        _convert.check_single(options)
        return self.generate_n(prompt, **options)[0]

    def generate_n(self, prompt: Prompt, **options: Unpack[SamplingOptions]) -> list[GenerateResult]:
        """Generates ``n`` samples (option ``n``) of one prompt; their results by index."""
        builder = _convert.ResultBuilder()
        for event in self.stream(prompt, **options):
            builder.add(event)
        return builder.results()

    # --- scoring and tokens ---------------------------------------------------------------------

    def score(
        self,
        context: Prompt | None,
        continuation: Prompt,
        *,
        top_logprobs: int = 0,
        session_id: str = "",
        add_special_tokens: bool | None = None,
    ) -> ScoreResult:
        """log p of each continuation token given the context (text, ids, or None) before it.

        With text on both sides, the two are encoded together as evaluation harnesses do.
        """
        request = _convert.score_request(
            context, continuation, top_logprobs, session_id, add_special_tokens
        )
        return _convert.score_result(self._call(self._inference.Score, request, session_id))

    def tokenize(self, text: str, *, add_special_tokens: bool | None = None) -> TokenizeResult:
        """The model's token ids (BOS first unless add_special_tokens=False) and pieces of a text."""
        request = _convert.tokenize_request(text, add_special_tokens)
        return _convert.tokenize_result(self._call(self._inference.Tokenize, request))

    def detokenize(self, token_ids: Sequence[int], *, skip_special_tokens: bool | None = None) -> str:
        """The text of token ids (special tokens left out unless skip_special_tokens=False)."""
        request = _convert.detokenize_request(token_ids, skip_special_tokens)
        return str(self._call(self._inference.Detokenize, request).text)

    def info(self) -> pb.ModelInfo:
        """What the server runs: the model (ModelInfo proto), tokenizer, backend and limits."""
        info: pb.ModelInfo = self._call(self._inference.GetModelInfo, pb.GetModelInfoRequest())
        return info

    def health(self, service: str = "") -> str:
        """The health status of ``service`` ("" = the server): "SERVING", "NOT_SERVING", ..."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._call(self._health.Check, request)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    # --- sessions -------------------------------------------------------------------------------

    def session(self, session_id: str) -> Session:
        """The saved conversation ``session_id`` (created by its first send if it does not exist)."""
        return Session(self, session_id, source=None)

    def list_sessions(self, page_size: int = 1000) -> list[SessionInfo]:
        """The caller's saved sessions, by id: every page, asked for ``page_size`` at a time."""
        request = spb.ListSessionsRequest(page_size=page_size)
        sessions: list[SessionInfo] = []
        while True:
            response = self._call(self._sessions.ListSessions, request)
            sessions.extend(_convert.session_info(s) for s in response.sessions)
            if not response.next_page_token:
                return sessions
            request.page_token = response.next_page_token

    def get_session(self, session_id: str) -> SessionInfo:
        """A saved session's facts; NotFoundError when there is none."""
        request = spb.GetSessionRequest(session_id=session_id)
        return _convert.session_info(self._call(self._sessions.GetSession, request, session_id))

    def delete_session(self, session_id: str) -> None:
        """Deletes a saved session; NotFoundError when there is none."""
        self._call(
            self._sessions.DeleteSession, spb.DeleteSessionRequest(session_id=session_id), session_id
        )

    def export_session(self, session_id: str, destination: PathOrFile) -> int:
        """Writes the session's snapshot to a path or binary file; returns the bytes written."""
        call = self._sessions.ExportSession(
            spb.ExportSessionRequest(session_id=session_id),
            timeout=self._timeout,
            metadata=_convert.session_metadata(self._metadata, session_id),
        )
        with _open(destination, "wb") as out:
            written = 0
            try:
                for chunk in call:
                    out.write(chunk.data)
                    written += len(chunk.data)
            except grpc.RpcError as e:
                raise error_from_rpc(e) from None
        return written

    def import_session(
        self, session_id: str, source: PathOrFile, *, if_revision: int | None = None
    ) -> SessionInfo:
        """Stores a snapshot from a path or binary file under ``session_id``, replacing one (with
        ``if_revision``: only if it is at that revision now, 0: only if there is none).

        The snapshot keeps its own revision where that is above the stored session's.
        """
        with _open(source, "rb") as data:
            blocks = iter(lambda: data.read(_convert.IMPORT_CHUNK_BYTES), b"")
            chunks = _convert.import_chunks(session_id, blocks, if_revision)
            return _convert.session_info(
                self._call(self._sessions.ImportSession, chunks, session_id)
            )


class Session:
    """A saved conversation on the server: each send continues it and saves it in the same call.

    The first send of a session that does not exist yet starts from nothing (BOS first); a fork
    reads its parent's state on its first send and saves under its own id. A send that continues
    the session saves only if no other request (on any replica) saved it since this send read it:
    else :class:`~hgrn2_client.errors.AbortedError` naming both revisions, nothing saved; send
    again to continue from the other request's save (or pass ``save_overwrite=True``).
    ``revision`` is the revision of this object's last save (None before one).
    """

    def __init__(self, client: Client, session_id: str, source: str | None) -> None:
        self._client = client
        self.id = session_id
        self._source = source  # the session the next send reads; None: look it up first
        self.revision: int | None = None

    def _read_from(self) -> str:
        if self._source is None:
            try:
                self._client.get_session(self.id)
                self._source = self.id
            except NotFoundError:
                self._source = ""
        return self._source

    def stream(self, text: Prompt, **options: Unpack[SamplingOptions]) -> Iterator[StreamEvent]:
        """Sends ``text`` (or ids) after the conversation so far, streaming the reply; saves it."""
        request = _convert.generate_request(
            text, dict(options), session_id=self._read_from(), save_session_as=self.id
        )
        for event in self._client._stream_request(request):
            if isinstance(event, StreamEnd) and event.saved_revision:
                self.revision = event.saved_revision
            yield event
        self._source = self.id

    def send(self, text: Prompt, **options: Unpack[SamplingOptions]) -> GenerateResult:
        """Sends ``text`` (or ids) after the conversation so far; returns the reply; saves it."""
        _convert.check_single(options)
        builder = _convert.ResultBuilder()
        for event in self.stream(text, **options):
            builder.add(event)
        return builder.results()[0]

    def fork(self, new_id: str) -> Session:
        """A session ``new_id`` whose first send continues this one (which stays as it is)."""
        return Session(self._client, new_id, source=self._read_from())

    def info(self) -> SessionInfo:
        """The saved session's facts; NotFoundError before its first send."""
        return self._client.get_session(self.id)

    def delete(self) -> None:
        """Deletes the saved session; the next send starts afresh."""
        self._client.delete_session(self.id)
        self._source = ""

    def export(self, destination: PathOrFile) -> int:
        """Writes the snapshot to a path or binary file; returns the bytes written."""
        return self._client.export_session(self.id, destination)

    def import_(self, source: PathOrFile) -> SessionInfo:
        """Replaces the saved session with a snapshot from a path or binary file."""
        info = self._client.import_session(self.id, source)
        self._source = self.id
        self.revision = info.revision
        return info


class _open:
    """A context manager over a path (opened and closed here) or a file object (left open)."""

    def __init__(self, target: PathOrFile, mode: str) -> None:
        self._target = target
        self._mode = mode
        self._owned: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if isinstance(self._target, (str, Path)):
            owned: IO[bytes] = open(self._target, self._mode)  # noqa: SIM115 (closed in __exit__)
            self._owned = owned
            return owned
        return self._target

    def __exit__(self, *exc: object) -> None:
        if self._owned is not None:
            self._owned.close()
