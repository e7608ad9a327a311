"""hgrn2_client: Python client of hgrn2-serve (gRPC API hgrn2.v1), sync and asyncio.

    from hgrn2_client import Client
    with Client("localhost:50051") as client:
        print(client.generate("Once upon a time", max_new_tokens=32, temperature=0).text)
"""

from .aio import AsyncClient, AsyncSession
from .client import Client, Session
from .errors import (
    AbortedError,
    DeadlineExceededError,
    FailedPreconditionError,
    Hgrn2Error,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from .types import (
    GenerateResult,
    Prompt,
    SamplingOptions,
    ScoreResult,
    SessionInfo,
    StreamChunk,
    StreamEnd,
    StreamEvent,
    TokenizeResult,
    TopLogprob,
    Usage,
)

__all__ = [
    "AbortedError",
    "AsyncClient",
    "AsyncSession",
    "Client",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "GenerateResult",
    "Hgrn2Error",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "Prompt",
    "ResourceExhaustedError",
    "SamplingOptions",
    "ScoreResult",
    "Session",
    "SessionInfo",
    "StreamChunk",
    "StreamEnd",
    "StreamEvent",
    "TokenizeResult",
    "TopLogprob",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "Usage",
]
