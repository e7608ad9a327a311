"""Conversions between the API's dataclasses/keywords and the hgrn2.v1 protos (sync and async)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ._proto import inference_pb2 as pb
from ._proto import sessions_pb2 as spb
from .types import (
    GenerateResult,
    Prompt,
    ScoreResult,
    SessionInfo,
    StreamChunk,
    StreamEnd,
    StreamEvent,
    TokenizeResult,
    TopLogprob,
    Usage,
)

_SAMPLING_FIELDS = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)
_REQUEST_FIELDS = (
    "max_new_tokens",
    "ignore_eos",
    "logprobs",
    "n",
    "priority",
    "add_special_tokens",
    "request_id",
    "save_if_revision",
    "save_overwrite",
)
_LIST_FIELDS = ("stop", "stop_token_ids")
_KNOWN = frozenset(_SAMPLING_FIELDS + _REQUEST_FIELDS + _LIST_FIELDS + ("logit_bias",))

_FINISH = {pb.LENGTH: "length", pb.EOS: "eos", pb.STOP: "stop"}

# The server reads logit_bias values <= -1e30 as a ban; JSON and float32 have no -inf to spare.
_BAN = -1e30


def generate_request(
    prompt: Prompt,
    options: dict[str, Any],
    session_id: str = "",
    save_session_as: str = "",
) -> pb.GenerateRequest:
    """The GenerateRequest for a prompt (text or ids) and SamplingOptions keywords.

    Raises TypeError for an unknown keyword; values are checked by the server.
    """
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise TypeError(f"unknown sampling option(s): {', '.join(unknown)}")
    request = pb.GenerateRequest(session_id=session_id, save_session_as=save_session_as)
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.token_ids.ids.extend(int(i) for i in prompt)
    for name in _SAMPLING_FIELDS:
        if options.get(name) is not None:
            setattr(request.sampling, name, options[name])
    for token_id, bias in (options.get("logit_bias") or {}).items():
        request.sampling.logit_bias[int(token_id)] = _BAN if math.isinf(bias) and bias < 0 else bias
    for name in _REQUEST_FIELDS:
        if options.get(name) is not None:
            setattr(request, name, options[name])
    for name in _LIST_FIELDS:
        values = options.get(name)
        if isinstance(values, (str, int)):  # one stop string or id, not a sequence of them
            values = [values]
        getattr(request, name).extend(values or [])
    return request


def _top(entries: Iterable[pb.TopLogprob]) -> list[TopLogprob]:
    return [TopLogprob(e.token_id, e.logprob, e.text) for e in entries]


def _usage(usage: pb.Usage) -> Usage:
    return Usage(usage.prompt_tokens, usage.generated_tokens, usage.cached_prompt_tokens)


def stream_events(response: pb.GenerateResponse) -> Iterator[StreamEvent]:
    """The events of one response message: a chunk when it has tokens or text, then its end."""
    if response.token_ids or response.text or response.request_id:
        yield StreamChunk(
            index=response.index,
            token_ids=list(response.token_ids),
            text=response.text,
            logprobs=[lp.logprob for lp in response.logprobs],
            top_logprobs=[_top(lp.top) for lp in response.logprobs],
            request_id=response.request_id,
        )
    if response.finish_reason != pb.FINISH_REASON_UNSPECIFIED:
        yield StreamEnd(
            index=response.index,
            finish_reason=_FINISH.get(response.finish_reason, "unspecified"),
            usage=_usage(response.usage),
            stop_string=response.stop_string,
            resumed_revision=response.resumed_revision,
            saved_revision=response.saved_revision,
        )


class ResultBuilder:
    """Accumulates stream events into one GenerateResult per sample index."""

    def __init__(self) -> None:
        self._results: dict[int, GenerateResult] = {}
        self._request_id = ""

    def add(self, event: StreamEvent) -> None:
        """Adds one event (of any sample) to its sample's result."""
        result = self._results.setdefault(event.index, GenerateResult(index=event.index))
        if isinstance(event, StreamChunk):
            self._request_id = self._request_id or event.request_id
            result.text += event.text
            result.token_ids.extend(event.token_ids)
            result.logprobs.extend(event.logprobs)
            result.top_logprobs.extend(event.top_logprobs)
        else:
            result.finish_reason = event.finish_reason
            result.usage = event.usage
            result.stop_string = event.stop_string
            result.resumed_revision = event.resumed_revision
            result.saved_revision = event.saved_revision

    def results(self) -> list[GenerateResult]:
        """Every sample's result, by index, each with the request's id."""
        out = [self._results[i] for i in sorted(self._results)]
        for result in out:
            result.request_id = self._request_id
        return out


def check_single(options: Mapping[str, object]) -> None:
    """generate() returns one sample: n > 1 belongs to generate_n()."""
    n = options.get("n")
    if isinstance(n, int) and n > 1:
        raise ValueError("generate() returns one sample; use generate_n() for n > 1")


def score_request(
    context: Prompt | None,
    continuation: Prompt,
    top_logprobs: int,
    session_id: str,
    add_special_tokens: bool | None,
) -> pb.ScoreRequest:
    """The ScoreRequest for a context (text, ids or none) and a continuation (text or ids)."""
    request = pb.ScoreRequest(top_logprobs=top_logprobs, session_id=session_id)
    if isinstance(context, str):
        request.context_text = context
    elif context is not None:
        request.context_ids.ids.extend(int(i) for i in context)
    if isinstance(continuation, str):
        request.continuation_text = continuation
    else:
        request.continuation_ids.ids.extend(int(i) for i in continuation)
    if add_special_tokens is not None:
        request.add_special_tokens = add_special_tokens
    return request


def score_result(response: pb.ScoreResponse) -> ScoreResult:
    """The ScoreResult of a ScoreResponse."""
    return ScoreResult(
        token_ids=list(response.token_ids),
        token_logprobs=list(response.token_logprobs),
        total_logprob=response.total_logprob,
        is_greedy=response.is_greedy,
        top_logprobs=[_top(lp.top) for lp in response.top_logprobs],
        unscored_tokens=response.unscored_tokens,
        context_tokens=response.context_tokens,
        request_id=response.request_id,
        session_revision=response.session_revision,
    )


def tokenize_request(text: str, add_special_tokens: bool | None) -> pb.TokenizeRequest:
    """The TokenizeRequest (add_special_tokens left out: the server's default, true)."""
    request = pb.TokenizeRequest(text=text)
    if add_special_tokens is not None:
        request.add_special_tokens = add_special_tokens
    return request


def tokenize_result(response: pb.TokenizeResponse) -> TokenizeResult:
    """The TokenizeResult of a TokenizeResponse."""
    return TokenizeResult(list(response.token_ids), list(response.pieces))


def detokenize_request(token_ids: Sequence[int], skip_special_tokens: bool | None) -> pb.DetokenizeRequest:
    """The DetokenizeRequest (skip_special_tokens left out: the server's default, true)."""
    request = pb.DetokenizeRequest(token_ids=[int(i) for i in token_ids])
    if skip_special_tokens is not None:
        request.skip_special_tokens = skip_special_tokens
    return request


def session_info(info: spb.SessionInfo) -> SessionInfo:
    """The SessionInfo dataclass of the proto."""
    return SessionInfo(
        session_id=info.session_id,
        num_tokens=info.num_tokens,
        size_bytes=info.size_bytes,
        saved_at_unix_ms=info.saved_at_unix_ms,
        expires_at_unix_ms=info.expires_at_unix_ms,
        model_fingerprint=info.model_fingerprint,
        state_dtype=info.state_dtype,
        revision=info.revision,
    )


IMPORT_CHUNK_BYTES = 1 << 20  # the chunk size sessions.proto names for snapshots


def import_chunks(
    session_id: str, data: Iterable[bytes], if_revision: int | None = None
) -> Iterator[spb.SessionChunk]:
    """SessionChunks of a snapshot: the first names the session and carries ``if_revision`` (sent
    even for no data)."""
    first = True
    for block in data:
        chunk = spb.SessionChunk(session_id=session_id if first else "", data=block)
        if first and if_revision is not None:
            chunk.if_revision = if_revision
        yield chunk
        first = False
    if first:
        chunk = spb.SessionChunk(session_id=session_id)
        if if_revision is not None:
            chunk.if_revision = if_revision
        yield chunk


def session_metadata(
    base: tuple[tuple[str, str], ...], session_id: str
) -> tuple[tuple[str, str], ...]:
    """Call metadata naming the session a call is about (``session-id: <id>``), for proxies that
    route each session to the same replica (consistent hashing on the header; docs/sessions.md)."""
    return base + (("session-id", session_id),) if session_id else base


def request_session(request: pb.GenerateRequest | pb.ScoreRequest) -> str:
    """The session a request is routed by: the one it resumes, else the one it saves."""
    if request.session_id:
        return str(request.session_id)
    return str(getattr(request, "save_session_as", ""))
