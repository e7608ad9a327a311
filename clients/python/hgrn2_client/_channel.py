"""Channel options shared by Client and AsyncClient: TLS, the API key header, default timeouts."""

from __future__ import annotations

import os
from typing import TypeAlias

import grpc

TlsOption: TypeAlias = bool | grpc.ChannelCredentials | None
"""None or False: plaintext; True: TLS with the system's roots; or your own credentials."""

PathLike: TypeAlias = str | os.PathLike[str]

# Snapshots come in chunks of up to 1 MiB; room for the framing.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def _read(path: PathLike | None, name: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{name} {os.fspath(path)}: cannot read it ({e.strerror})") from None


def credentials(
    tls: TlsOption,
    tls_ca: PathLike | None = None,
    tls_cert: PathLike | None = None,
    tls_key: PathLike | None = None,
) -> grpc.ChannelCredentials | None:
    """The channel credentials, or None for plaintext.

    ``tls_ca`` (PEM roots that sign the server's certificate) and ``tls_cert``/``tls_key`` (a
    client certificate chain and its key, for mutual TLS) are file paths; any of them turns TLS on
    (the system's roots unless ``tls_ca``). They cannot be combined with ready-made credentials in
    ``tls``.
    """
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together")
    if tls_ca is not None or tls_cert is not None:
        if isinstance(tls, grpc.ChannelCredentials):
            raise ValueError("give tls credentials or tls_ca/tls_cert/tls_key, not both")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(tls_ca, "tls_ca"),
            private_key=_read(tls_key, "tls_key"),
            certificate_chain=_read(tls_cert, "tls_cert"),
        )
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    return tls


def open_channel(
    grpc_module,
    addr: str,
    tls: TlsOption,
    tls_ca: PathLike | None = None,
    tls_cert: PathLike | None = None,
    tls_key: PathLike | None = None,
):
    """A channel to ``addr`` from ``grpc_module`` (``grpc`` or ``grpc.aio``), plaintext or TLS."""
    creds = credentials(tls, tls_ca, tls_cert, tls_key)
    if creds is None:
        return grpc_module.insecure_channel(addr, options=CHANNEL_OPTIONS)
    return grpc_module.secure_channel(addr, creds, options=CHANNEL_OPTIONS)


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata: ``authorization: Bearer <key>`` when an API key is given."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()
