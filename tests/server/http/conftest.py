"""Fixtures of the OpenAI-compatible API's client tests: hgrn2-server processes (CPU) serving
HTTP on free ports, and hgrn2-run for the references.

Paths come from the environment ctest sets (HGRN2_SERVER, HGRN2_RUN, HGRN2_TEST_DATA_DIR), else
from a build in the repository's build/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SERVER = os.environ.get("HGRN2_SERVER", str(REPO / "build/bin/hgrn2-server"))
RUN = os.environ.get("HGRN2_RUN", str(REPO / "build/bin/hgrn2-run"))
DATA = Path(os.environ.get("HGRN2_TEST_DATA_DIR", str(REPO / "tests/data")))
DEMO = REPO / "models/hgrn2-demo"
KEY = "test-key-acme"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One hgrn2-server on 127.0.0.1 and the CPU with its HTTP API on a free port; SIGTERM stops
    it."""

    def __init__(self, model: Path, log: Path, *extra_args: str) -> None:
        self.http_port = free_port()
        self._log = log.open("w+")
        self.process = subprocess.Popen(
            [SERVER, "--model", str(model), "--host", "127.0.0.1", "--port", "0",
             "--device", "cpu", "--metrics-port", "0", "--http-port", str(self.http_port),
             "--max-running", "8", *extra_args],
            stderr=self._log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if re.search(r"OpenAI-compatible HTTP API on 127\.0\.0\.1:\d+", log.read_text()):
                self.base_url = f"http://127.0.0.1:{self.http_port}/v1"
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"hgrn2-server did not start; its log:\n{log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The bundled demo model (a tokenizer, no chat template: the built-in one)."""
    server = Server(DEMO, tmp_path_factory.mktemp("demo") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The fixture model tiny-a behind API keys: tenant acme, one request at a time."""
    folder = tmp_path_factory.mktemp("keyed")
    keys = folder / "keys.json"
    keys.write_text(json.dumps({
        "tenants": {"acme": {"max_concurrent_requests": 1}},
        "keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "tenant": "acme"}]}))
    server = Server(DATA / "tiny-a", folder / "server.log", "--api-keys", str(keys),
                    "--max-new-tokens", "1000000")
    yield server
    server.stop()


def run(*args: str) -> str:
    """hgrn2-run on the CPU; its standard output."""
    out = subprocess.run([RUN, "--device", "cpu", *args], check=True, capture_output=True,
                         text=True, timeout=120)
    return out.stdout


def post(server: Server, path: str, body: dict) -> dict:
    """A JSON POST to the server's HTTP API (outside /v1); the JSON answer."""
    import urllib.request
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
