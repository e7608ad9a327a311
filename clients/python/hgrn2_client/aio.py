"""The asyncio client (grpc.aio): AsyncClient and AsyncSession, the same API as Client awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import _convert
from ._channel import PathLike, TlsOption, metadata, open_channel
from ._proto import inference_pb2 as pb
from ._proto import inference_pb2_grpc as pb_grpc
from ._proto import sessions_pb2 as spb
from ._proto import sessions_pb2_grpc as spb_grpc
from .client import PathOrFile, _open
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


class AsyncClient:
    """A grpc.aio connection to hgrn2-server; arguments and errors as :class:`Client`.

    Create it inside a running event loop; ``await client.close()`` or ``async with``.
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
        self._channel = open_channel(grpc.aio, addr, tls, tls_ca, tls_cert, tls_key)
        self._metadata = metadata(api_key)
        self._timeout = timeout
        self._inference = pb_grpc.InferenceStub(self._channel)  # type: ignore[no-untyped-call]
        self._sessions = spb_grpc.SessionsStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any, session_id: str = "") -> Any:
        metadata = _convert.session_metadata(self._metadata, session_id)
        try:
            return await method(request, timeout=self._timeout, metadata=metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    async def _stream_request(self, request: pb.GenerateRequest) -> AsyncIterator[StreamEvent]:
        metadata = _convert.session_metadata(self._metadata, _convert.request_session(request))
        call = self._inference.Generate(request, timeout=self._timeout, metadata=metadata)
        try:
            async for response in call:
                for event in _convert.stream_events(response):
                    yield event
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        finally:
            call.cancel()

    def stream(self, prompt: Prompt, **options: Unpack[SamplingOptions]) -> AsyncIterator[StreamEvent]:
        """Generates after ``prompt``, yielding StreamChunk events, then a StreamEnd per sample."""
        return self._stream_request(_convert.generate_request(prompt, dict(options)))

    async def generate(self, prompt: Prompt, **options: Unpack[SamplingOptions]) -> GenerateResult:
        """Generates after ``prompt`` (text or token ids) and returns the whole sample."""
        _convert.check_single(options)
        return (await self.generate_n(prompt, **options))[0]

    async def generate_n(self, prompt: Prompt, **options: Unpack[SamplingOptions]) -> list[GenerateResult]:
        """Generates ``n`` samples (option ``n``) of one prompt; their results by index."""
        builder = _convert.ResultBuilder()
        async for event in self.stream(prompt, **options):
            builder.add(event)
        return builder.results()

    async def score(
        self,
        context: Prompt | None,
        continuation: Prompt,
        *,
        top_logprobs: int = 0,
        session_id: str = "",
        add_special_tokens: bool | None = None,
    ) -> ScoreResult:
        """log p of each continuation token given the context before it (see Client.score)."""
        request = _convert.score_request(
            context, continuation, top_logprobs, session_id, add_special_tokens
        )
        return _convert.score_result(await self._call(self._inference.Score, request, session_id))

    async def tokenize(self, text: str, *, add_special_tokens: bool | None = None) -> TokenizeResult:
        """The model's token ids and pieces of a text."""
        request = _convert.tokenize_request(text, add_special_tokens)
        return _convert.tokenize_result(await self._call(self._inference.Tokenize, request))

    async def detokenize(self, token_ids: Sequence[int], *, skip_special_tokens: bool | None = None) -> str:
        """The text of token ids."""
        request = _convert.detokenize_request(token_ids, skip_special_tokens)
        return str((await self._call(self._inference.Detokenize, request)).text)

    async def info(self) -> pb.ModelInfo:
        """What the server runs (ModelInfo proto)."""
        info: pb.ModelInfo = await self._call(self._inference.GetModelInfo, pb.GetModelInfoRequest())
        return info

    async def health(self, service: str = "") -> str:
        """The health status of ``service`` ("" = the server): "SERVING", "NOT_SERVING", ..."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._call(self._health.Check, request)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def session(self, session_id: str) -> AsyncSession:
        """The saved conversation ``session_id`` (created by its first send if it does not exist)."""
        return AsyncSession(self, session_id, source=None)

    async def list_sessions(self, page_size: int = 1000) -> list[SessionInfo]:
        """The caller's saved sessions, by id: every page, asked for ``page_size`` at a time."""
        request = spb.ListSessionsRequest(page_size=page_size)
        sessions: list[SessionInfo] = []
        while True:
            response = await self._call(self._sessions.ListSessions, request)
            sessions.extend(_convert.session_info(s) for s in response.sessions)
            if not response.next_page_token:
                return sessions
            request.page_token = response.next_page_token

    async def get_session(self, session_id: str) -> SessionInfo:
        """A saved session's facts; NotFoundError when there is none."""
        request = spb.GetSessionRequest(session_id=session_id)
        return _convert.session_info(await self._call(self._sessions.GetSession, request, session_id))

    async def delete_session(self, session_id: str) -> None:
        """Deletes a saved session; NotFoundError when there is none."""
        await self._call(
            self._sessions.DeleteSession, spb.DeleteSessionRequest(session_id=session_id), session_id
        )

    async def export_session(self, session_id: str, destination: PathOrFile) -> int:
        """Writes the session's snapshot to a path or binary file; returns the bytes written."""
        call = self._sessions.ExportSession(
            spb.ExportSessionRequest(session_id=session_id),
            timeout=self._timeout,
            metadata=_convert.session_metadata(self._metadata, session_id),
        )
        written = 0
        with _open(destination, "wb") as out:
            try:
                async for chunk in call:
                    out.write(chunk.data)
                    written += len(chunk.data)
            except grpc.RpcError as e:
                raise error_from_rpc(e) from None
        return written

    async def import_session(
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
                await self._call(self._sessions.ImportSession, chunks, session_id)
            )


class AsyncSession:
    """The asyncio form of :class:`~hgrn2_client.client.Session`."""

    def __init__(self, client: AsyncClient, session_id: str, source: str | None) -> None:
        self._client = client
        self.id = session_id
        self._source = source
        self.revision: int | None = None

    async def _read_from(self) -> str:
        if self._source is None:
            try:
                await self._client.get_session(self.id)
                self._source = self.id
            except NotFoundError:
                self._source = ""
        return self._source

    async def stream(self, text: Prompt, **options: Unpack[SamplingOptions]) -> AsyncIterator[StreamEvent]:
        """Sends ``text`` after the conversation so far, streaming the reply; saves it."""
        request = _convert.generate_request(
            text, dict(options), session_id=await self._read_from(), save_session_as=self.id
        )
        async for event in self._client._stream_request(request):
            if isinstance(event, StreamEnd) and event.saved_revision:
                self.revision = event.saved_revision
            yield event
        self._source = self.id

    async def send(self, text: Prompt, **options: Unpack[SamplingOptions]) -> GenerateResult:
        """Sends ``text`` after the conversation so far; returns the reply; saves it."""
        _convert.check_single(options)
        builder = _convert.ResultBuilder()
        async for event in self.stream(text, **options):
            builder.add(event)
        return builder.results()[0]

    async def fork(self, new_id: str) -> AsyncSession:
        """A session ``new_id`` whose first send continues this one."""
        return AsyncSession(self._client, new_id, source=await self._read_from())

    async def info(self) -> SessionInfo:
        """The saved session's facts."""
        return await self._client.get_session(self.id)

    async def delete(self) -> None:
        """Deletes the saved session; the next send starts afresh."""
        await self._client.delete_session(self.id)
        self._source = ""

    async def export(self, destination: PathOrFile) -> int:
        """Writes the snapshot to a path or binary file; returns the bytes written."""
        return await self._client.export_session(self.id, destination)

    async def import_(self, source: PathOrFile) -> SessionInfo:
        """Replaces the saved session with a snapshot from a path or binary file."""
        info = await self._client.import_session(self.id, source)
        self._source = self.id
        self.revision = info.revision
        return info
