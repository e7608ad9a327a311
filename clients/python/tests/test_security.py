"""TLS, mutual TLS and API keys from the client's side: Client, AsyncClient and the `hgrn2`
command against a server with certificates the openssl command makes here."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DATA, Server
from test_cli import hgrn2

from hgrn2_client import AsyncClient, Client
from hgrn2_client.errors import UnauthenticatedError, UnavailableError

KEY = "python-client-key"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _issue(pki: Path, ca: str, name: str, extension: str) -> None:
    (pki / f"{ca}-{name}.ext").write_text(extension + "\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", f"/CN={ca}-{name}", "-keyout", str(pki / f"{ca}-{name}.key"),
             "-out", str(pki / f"{ca}-{name}.csr"))
    _openssl("x509", "-req", "-days", "2", "-in", str(pki / f"{ca}-{name}.csr"),
             "-CA", str(pki / f"{ca}-ca.pem"), "-CAkey", str(pki / f"{ca}-ca.key"),
             "-CAcreateserial", "-extfile", str(pki / f"{ca}-{name}.ext"),
             "-out", str(pki / f"{ca}-{name}.pem"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CAs "a" and "b", each with a server certificate (127.0.0.1) and a client certificate."""
    pki = tmp_path_factory.mktemp("pki")
    for ca in ("a", "b"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-days", "2", "-subj", f"/CN=hgrn2-test-ca-{ca}",
                 "-keyout", str(pki / f"{ca}-ca.key"), "-out", str(pki / f"{ca}-ca.pem"))
        _issue(pki, ca, "server", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        _issue(pki, ca, "client", "extendedKeyUsage=clientAuth")
    return pki


@pytest.fixture(scope="module")
def secure_server(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """tiny-a with mutual TLS (CA a) and one API key."""
    keys = pki / "keys.json"
    keys.write_text(json.dumps({
        "tenants": {"py": {}},
        "keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "tenant": "py"}],
    }))
    server = Server(DATA / "tiny-a", tmp_path_factory.mktemp("secure") / "server.log",
                    "--tls-cert", str(pki / "a-server.pem"), "--tls-key", str(pki / "a-server.key"),
                    "--tls-client-ca", str(pki / "a-ca.pem"), "--api-keys", str(keys))
    yield server
    server.stop()


def test_client_with_ca_client_certificate_and_key(secure_server: Server, pki: Path) -> None:
    certificate = {"tls_cert": pki / "a-client.pem", "tls_key": pki / "a-client.key"}
    with Client(secure_server.addr, api_key=KEY, tls_ca=pki / "a-ca.pem", timeout=10,
                **certificate) as client:
        assert client.info().vocab_size == 512
        assert client.health() == "SERVING"
    with Client(secure_server.addr, tls_ca=pki / "a-ca.pem", timeout=10, **certificate) as client:
        with pytest.raises(UnauthenticatedError, match="no API key"):
            client.info()
        assert client.health() == "SERVING"  # health needs no key
    with Client(secure_server.addr, api_key="wrong", tls_ca=pki / "a-ca.pem", timeout=10,
                **certificate) as client:
        with pytest.raises(UnauthenticatedError, match="not recognized"):
            client.info()
    # Without a client certificate, or with one of another CA, there is no connection.
    with Client(secure_server.addr, api_key=KEY, tls_ca=pki / "a-ca.pem", timeout=10) as client:
        with pytest.raises(UnavailableError):
            client.info()
    with Client(secure_server.addr, api_key=KEY, tls_ca=pki / "a-ca.pem", timeout=10,
                tls_cert=pki / "b-client.pem", tls_key=pki / "b-client.key") as client:
        with pytest.raises(UnavailableError):
            client.info()
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        Client(secure_server.addr, tls_cert=pki / "a-client.pem")
    with pytest.raises(ValueError, match="tls_ca .*missing.pem: cannot read it"):
        Client(secure_server.addr, tls_ca=pki / "missing.pem")


def test_async_client_with_mutual_tls(secure_server: Server, pki: Path) -> None:
    async def run() -> int:
        async with AsyncClient(secure_server.addr, api_key=KEY, tls_ca=pki / "a-ca.pem",
                               tls_cert=pki / "a-client.pem", tls_key=pki / "a-client.key",
                               timeout=10) as client:
            return (await client.info()).vocab_size

    assert asyncio.run(run()) == 512


def test_command_with_tls_flags(secure_server: Server, pki: Path) -> None:
    tls = ["--tls-ca", str(pki / "a-ca.pem"), "--tls-cert", str(pki / "a-client.pem"),
           "--tls-key", str(pki / "a-client.key")]
    out = hgrn2("--addr", secure_server.addr, *tls, "generate", "--ids", "1,2,3",
                "--max-new-tokens", "3", "--print-ids", env={"HGRN2_API_KEY": KEY})
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().split(",")) == 3
    out = hgrn2("--addr", secure_server.addr, *tls, "info")
    assert out.returncode == 1
    assert "no API key" in out.stderr
    out = hgrn2("--addr", secure_server.addr, "--tls-cert", str(pki / "a-client.pem"), "info")
    assert out.returncode == 2
    assert "--tls-cert and --tls-key go together" in out.stderr
