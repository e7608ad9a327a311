"""Channel options shared by Client and AsyncClient: TLS, the API key header, default timeouts."""

from __future__ import annotations

from typing import TypeAlias

import grpc

TlsOption: TypeAlias = bool | grpc.ChannelCredentials | None
"""None or False: plaintext; True: TLS with the system's roots; or your own credentials."""

# Snapshots come in chunks of up to 1 MiB; room for the framing.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def credentials(tls: TlsOption) -> grpc.ChannelCredentials | None:
    """The channel credentials for a ``tls`` argument, or None for plaintext."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    return tls


def open_channel(grpc_module, addr: str, tls: TlsOption):
    """A channel to ``addr`` from ``grpc_module`` (``grpc`` or ``grpc.aio``), plaintext or TLS."""
    creds = credentials(tls)
    if creds is None:
        return grpc_module.insecure_channel(addr, options=CHANNEL_OPTIONS)
    return grpc_module.secure_channel(addr, creds, options=CHANNEL_OPTIONS)


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata: ``authorization: Bearer <key>`` when an API key is given."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()
