"""The exceptions of hgrn2_client: one per gRPC status code the server documents."""

from __future__ import annotations

import grpc


class Hgrn2Error(Exception):
    """A call failed: ``code`` is the gRPC status code, ``details`` the server's message.

    The server names the field and the reason in ``details`` (``sampling.top_p must be in (0, 1],
    got 2``). Subclasses exist for the codes a client commonly handles; others are this class.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details or '(the server gave no details)'}")
        self.code = code
        self.details = details


class InvalidArgumentError(Hgrn2Error):
    """INVALID_ARGUMENT: a bad request (a value out of range, an id outside the vocabulary)."""


class NotFoundError(Hgrn2Error):
    """NOT_FOUND: no such session (or health service)."""


class AlreadyExistsError(Hgrn2Error):
    """ALREADY_EXISTS."""


class AbortedError(Hgrn2Error):
    """ABORTED: another request is saving the same session, or saved it since the revision this
    save expected (the message names both revisions): resume the session again and retry."""


class FailedPreconditionError(Hgrn2Error):
    """FAILED_PRECONDITION: e.g. a session snapshot of another model."""


class ResourceExhaustedError(Hgrn2Error):
    """RESOURCE_EXHAUSTED: the queue is full, a limit is reached, or the session store is full."""


class UnavailableError(Hgrn2Error):
    """UNAVAILABLE: the server cannot be reached, is draining or stopped."""


class DeadlineExceededError(Hgrn2Error):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class UnimplementedError(Hgrn2Error):
    """UNIMPLEMENTED: the server lacks the feature (or the service)."""


class UnauthenticatedError(Hgrn2Error):
    """UNAUTHENTICATED: a missing or wrong API key."""


class PermissionDeniedError(Hgrn2Error):
    """PERMISSION_DENIED: the API key may not do this."""


class InternalError(Hgrn2Error):
    """INTERNAL: a failure inside the server (e.g. the device)."""


_BY_CODE: dict[grpc.StatusCode, type[Hgrn2Error]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def error_from_rpc(error: grpc.RpcError) -> Hgrn2Error:
    """The Hgrn2Error (subclass by code) for a failed gRPC call (sync or grpc.aio)."""
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details = (details_of() if callable(details_of) else None) or ""
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return _BY_CODE.get(code, Hgrn2Error)(code, details)
