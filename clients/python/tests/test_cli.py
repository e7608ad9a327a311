"""The `hgrn2` command as a subprocess: output, exit codes and one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest
from conftest import Server

from hgrn2_client import Client

HGRN2 = shutil.which("hgrn2", path=os.path.dirname(sys.executable)) or "hgrn2"


def hgrn2(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `hgrn2 ARGS` with stdin and extra environment; its exit code and output."""
    return subprocess.run(
        [HGRN2, *args], input=stdin, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_generate_ids_and_text(ids_server: Server, text_server: Server, text_client: Client) -> None:
    out = hgrn2("--addr", ids_server.addr, "generate", "--ids", "1,17,42", "--max-new-tokens", "6",
                "--temperature", "0", "--ignore-eos", "--print-ids")
    assert out.returncode == 0, out.stderr
    with Client(ids_server.addr) as client:
        want = client.generate([1, 17, 42], max_new_tokens=6, temperature=0, ignore_eos=True)
    assert out.stdout.strip() == ",".join(map(str, want.token_ids))
    out = hgrn2("--addr", ids_server.addr, "generate", "--ids", "1,17,42", "--max-new-tokens", "6",
                "--temperature", "0", "--ignore-eos")
    assert out.stdout.strip() == ",".join(map(str, want.token_ids))  # no tokenizer: ids, not text
    out = hgrn2("generate", "Once upon a time", "--max-new-tokens", "12", "--temperature", "0",
                env={"HGRN2_ADDR": text_server.addr})
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") == text_client.generate("Once upon a time", max_new_tokens=12, temperature=0).text
    assert "[finish: length" in out.stderr


def test_other_commands(text_server: Server) -> None:
    addr = ("--addr", text_server.addr)
    out = hgrn2("health", *addr)
    assert (out.returncode, out.stdout) == (0, "SERVING\n")
    out = hgrn2("tokenize", "Hello world", *addr)
    assert out.returncode == 0 and out.stdout.splitlines()[1] == '1 "<s>"'
    ids = out.stdout.splitlines()[0]
    out = hgrn2("detokenize", ids, *addr)
    assert (out.returncode, out.stdout) == (0, "Hello world\n")
    out = hgrn2("score", "--context", "The quick", "--continuation", " brown fox", *addr)
    assert out.returncode == 0 and out.stdout.splitlines()[-1].startswith("total -")
    out = hgrn2("info", "--json", *addr)
    assert out.returncode == 0 and '"vocabSize": 8192' in out.stdout


def test_errors_are_one_line_exit_1(ids_server: Server) -> None:
    out = hgrn2("--addr", ids_server.addr, "generate", "--ids", "1,2", "--temperature", "-1")
    assert out.returncode == 1
    assert out.stderr == "hgrn2: INVALID_ARGUMENT: sampling.temperature must be >= 0, got -1\n"
    out = hgrn2("--addr", "127.0.0.1:1", "--timeout", "5", "health")
    assert out.returncode == 1 and out.stderr.startswith("hgrn2: UNAVAILABLE: ")
    assert out.stderr.count("\n") == 1


def test_chat_keeps_a_session(text_server: Server, text_client: Client) -> None:
    name = f"chat-{uuid.uuid4().hex[:8]}"
    script = "Emma said\n/fork {0}-b\nand then\n/save\n/quit\nnever sent\n".format(name)
    out = hgrn2("--addr", text_server.addr, "chat", "--session", name, "--max-new-tokens", "4",
                "--temperature", "0", stdin=script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()  # the replies (their own text may hold newlines)
    assert f"[forked: now on session {name}-b]" in out.stderr and "saved: " in out.stderr
    assert text_client.get_session(name).num_tokens < text_client.get_session(f"{name}-b").num_tokens
    text_client.delete_session(name)
    text_client.delete_session(f"{name}-b")
