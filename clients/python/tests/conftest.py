"""Fixtures of the client tests: hgrn2-server processes (CPU) on free ports, and clients of them.

Paths come from the environment ctest sets (HGRN2_SERVER, HGRN2_CLI, HGRN2_TEST_DATA_DIR), else
from a build in the repository's build/.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgrn2_client import Client

REPO = Path(__file__).resolve().parents[3]
SERVER = os.environ.get("HGRN2_SERVER", str(REPO / "build/bin/hgrn2-server"))
CLI = os.environ.get("HGRN2_CLI", str(REPO / "build/bin/hgrn2-cli"))
DATA = Path(os.environ.get("HGRN2_TEST_DATA_DIR", str(REPO / "tests/data")))
DEMO = REPO / "models/hgrn2-demo"


class Server:
    """One hgrn2-server on 127.0.0.1 (a port it picks) and the CPU, with any extra flags; stopped
    with SIGTERM."""

    def __init__(self, model: Path, log: Path, *extra_args: str) -> None:
        self._log = log.open("w+")
        self.process = subprocess.Popen(
            [SERVER, "--model", str(model), "--host", "127.0.0.1", "--port", "0",
             "--device", "cpu", "--metrics-port", "0", "--http-port", "0", "--max-running", "8",
             *extra_args],
            stderr=self._log,
        )
        self.addr = self._wait_serving(log)

    def _wait_serving(self, log: Path) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(r"hgrn2-server: serving .* on (127\.0\.0\.1:\d+)", log.read_text())
            if match:
                return match.group(1)
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
def ids_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of the fixture model tiny-a (random weights, token ids only)."""
    server = Server(DATA / "tiny-a", tmp_path_factory.mktemp("ids") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of the bundled demo model (with a tokenizer)."""
    server = Server(DEMO, tmp_path_factory.mktemp("text") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def ids_client(ids_server: Server) -> Iterator[Client]:
    """A Client of the tiny-a server."""
    with Client(ids_server.addr, timeout=30) as client:
        yield client


@pytest.fixture
def text_client(text_server: Server) -> Iterator[Client]:
    """A Client of the demo-model server."""
    with Client(text_server.addr, timeout=30) as client:
        yield client


@pytest.fixture
def sessions(ids_client: Client) -> Client:
    """ids_client, for the session tests."""
    return ids_client
