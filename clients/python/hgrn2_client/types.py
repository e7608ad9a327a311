"""The results hgrn2_client returns, as plain dataclasses (the protos stay behind the API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, TypeAlias, TypedDict, Union

Prompt: TypeAlias = Union[str, Sequence[int]]
"""A text (encoded by the server's tokenizer) or token ids."""


class SamplingOptions(TypedDict, total=False):
    """Keyword arguments of generate/stream (GenerateRequest and its SamplingParams).

    Left out, each takes the server's default (temperature 1, top_p 1, no penalties, a random
    seed, the server's default max_new_tokens).
    """

    temperature: float  # >= 0; 0 = greedy
    top_k: int  # 0 = off
    top_p: float  # in (0, 1]
    min_p: float  # in [0, 1]
    repetition_penalty: float  # > 0, over prompt and output
    presence_penalty: float  # in [-2, 2], over output
    frequency_penalty: float  # in [-2, 2], over output
    seed: int  # same seed, same tokens
    logit_bias: Dict[int, float]  # token id -> added to its logit; float("-inf") bans it
    stop: Sequence[str]  # stop strings (the text ends before them)
    stop_token_ids: Sequence[int]
    max_new_tokens: int  # 0 = the server's default
    ignore_eos: bool
    logprobs: int  # alternatives per generated token (each token's own log-prob always comes)
    n: int  # independent samples (generate_n / stream)
    priority: int  # higher first when the server is busy
    add_special_tokens: bool  # BOS before a text prompt; default: yes unless on a session
    request_id: str
    # Session.send/stream only (the save): save only if the session is at this revision now (0:
    # only if there is none), else AbortedError naming both revisions.
    save_if_revision: int
    # Session.send/stream only: save even if another request saved the session since this one
    # resumed it (the last save wins).
    save_overwrite: bool


@dataclass(frozen=True)
class TopLogprob:
    """One alternative token at a position: its id, log-probability and text."""

    token_id: int
    logprob: float
    text: str = ""


@dataclass(frozen=True)
class Usage:
    """Token counts of one generation (or sample)."""

    prompt_tokens: int
    generated_tokens: int
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class StreamChunk:
    """Tokens generated since the previous chunk of sample ``index``, and their new text.

    ``text`` is always complete UTF-8 characters; text that may begin a stop string is held back.
    ``top_logprobs[i]`` holds the alternatives of ``token_ids[i]`` (empty unless ``logprobs`` > 0).
    """

    index: int
    token_ids: List[int]
    text: str
    logprobs: List[float]
    top_logprobs: List[List[TopLogprob]]
    request_id: str = ""


@dataclass(frozen=True)
class StreamEnd:
    """The end of sample ``index``: why it finished ("length", "eos" or "stop") and its usage.

    ``resumed_revision``: the revision of the session resumed; ``saved_revision``: the revision
    saved (0 when none).
    """

    index: int
    finish_reason: str
    usage: Usage
    stop_string: str = ""
    resumed_revision: int = 0
    saved_revision: int = 0


StreamEvent: TypeAlias = Union[StreamChunk, StreamEnd]
"""What stream() yields: chunks of a sample, then its end."""


@dataclass
class GenerateResult:
    """One whole generated sample: its text, ids, each token's log-probability, finish and usage."""

    text: str = ""
    token_ids: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    top_logprobs: List[List[TopLogprob]] = field(default_factory=list)
    finish_reason: str = ""
    stop_string: str = ""
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    request_id: str = ""
    index: int = 0
    resumed_revision: int = 0  # of the session resumed (0: none)
    saved_revision: int = 0  # of the session saved (0: none)


@dataclass(frozen=True)
class ScoreResult:
    """log p of each scored continuation token given everything before it, and their sum.

    ``unscored_tokens`` leading continuation tokens only served as context (1 with no context);
    ``is_greedy``: every scored token was the most probable one.
    """

    token_ids: List[int]
    token_logprobs: List[float]
    total_logprob: float
    is_greedy: bool
    top_logprobs: List[List[TopLogprob]]
    unscored_tokens: int
    context_tokens: int
    request_id: str = ""
    session_revision: int = 0  # of the session scored on (0: none)


@dataclass(frozen=True)
class TokenizeResult:
    """Token ids of a text and each token's piece as the vocabulary spells it (``▁the``)."""

    token_ids: List[int]
    pieces: List[str]


@dataclass(frozen=True)
class SessionInfo:
    """A saved session: its token count, snapshot size, times (Unix ms), model fingerprint and
    revision (1 for the first save of the id, +1 for each later one)."""

    session_id: str
    num_tokens: int
    size_bytes: int
    saved_at_unix_ms: int
    expires_at_unix_ms: int
    model_fingerprint: str
    state_dtype: str
    revision: int = 0

