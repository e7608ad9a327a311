"""Client and AsyncClient against a real hgrn2-server: generation, streaming, scoring, tokens, errors."""

from __future__ import annotations

import asyncio
import math
import subprocess

import grpc
import pytest
from conftest import CLI, Server

from hgrn2_client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    InvalidArgumentError,
    SamplingOptions,
    StreamChunk,
    StreamEnd,
    UnavailableError,
)

PROMPT = [1, 17, 42, 99, 7]


def cli_ids(server: Server, *flags: str) -> list[int]:
    """The ids hgrn2-cli (the C++ client) generates for PROMPT with these flags."""
    out = subprocess.run(
        [CLI, "--addr", server.addr, "generate", "--ids", ",".join(map(str, PROMPT)),
         "--print-ids", *flags],
        check=True, capture_output=True, text=True,
    ).stdout
    return [int(t) for t in out.strip().split(",")]


def test_generate_equals_hgrn2_cli(ids_server: Server, ids_client: Client) -> None:
    greedy = ids_client.generate(PROMPT, max_new_tokens=24, temperature=0, ignore_eos=True)
    assert greedy.token_ids == cli_ids(ids_server, "--max-new-tokens", "24", "--temperature", "0", "--ignore-eos")
    sampled = ids_client.generate(
        PROMPT, max_new_tokens=24, temperature=0.9, top_k=40, top_p=0.95, seed=7, ignore_eos=True
    )
    assert sampled.token_ids == cli_ids(
        ids_server, "--max-new-tokens", "24", "--temperature", "0.9", "--top-k", "40",
        "--top-p", "0.95", "--seed", "7", "--ignore-eos",
    )
    assert sampled.finish_reason == "length"
    assert sampled.usage.prompt_tokens == len(PROMPT) and sampled.usage.generated_tokens == 24
    assert len(sampled.logprobs) == 24 and all(lp <= 0 for lp in sampled.logprobs)
    assert sampled.request_id


def test_stream_equals_generate(text_client: Client) -> None:
    options: SamplingOptions = {"max_new_tokens": 32, "temperature": 0.8, "seed": 3, "logprobs": 2}
    whole = text_client.generate("Once upon a time", **options)
    events = list(text_client.stream("Once upon a time", **options))
    chunks = [e for e in events if isinstance(e, StreamChunk)]
    assert isinstance(events[-1], StreamEnd) and sum(isinstance(e, StreamEnd) for e in events) == 1
    assert [t for c in chunks for t in c.token_ids] == whole.token_ids
    assert "".join(c.text for c in chunks) == whole.text and whole.text
    assert [lp for c in chunks for lp in c.logprobs] == whole.logprobs
    assert all(len(top) == 2 for top in whole.top_logprobs)
    assert events[-1].usage == whole.usage


def test_seeded_reproducible_and_seed_matters(ids_client: Client) -> None:
    def run(seed: int) -> list[int]:
        return ids_client.generate(PROMPT, max_new_tokens=32, seed=seed, ignore_eos=True).token_ids

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_stop_token_and_logit_bias(ids_client: Client) -> None:
    greedy = ids_client.generate(PROMPT, max_new_tokens=16, temperature=0, ignore_eos=True).token_ids
    stopped = ids_client.generate(
        PROMPT, max_new_tokens=16, temperature=0, ignore_eos=True, stop_token_ids=[greedy[3]]
    )
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == greedy[: greedy.index(greedy[3]) + 1]
    banned = ids_client.generate(
        PROMPT, max_new_tokens=16, temperature=0, ignore_eos=True, logit_bias={greedy[0]: -math.inf}
    )
    assert banned.token_ids[0] != greedy[0]


def test_generate_n(ids_client: Client) -> None:
    with pytest.raises(ValueError):
        ids_client.generate(PROMPT, n=2)
    samples = ids_client.generate_n(PROMPT, n=3, max_new_tokens=8, seed=1, ignore_eos=True)
    assert [s.index for s in samples] == [0, 1, 2]
    assert all(len(s.token_ids) == 8 for s in samples)
    # Sample i draws with seed + i: the same as a single request with that seed.
    for i, sample in enumerate(samples):
        single = ids_client.generate(PROMPT, max_new_tokens=8, seed=1 + i, ignore_eos=True)
        assert sample.token_ids == single.token_ids


def test_score_matches_generation_logprobs(ids_client: Client) -> None:
    result = ids_client.generate(PROMPT, max_new_tokens=8, temperature=0, ignore_eos=True)
    score = ids_client.score(PROMPT, result.token_ids, top_logprobs=1)
    assert score.token_ids == result.token_ids
    assert score.token_logprobs == pytest.approx(result.logprobs, abs=1e-4)
    assert score.total_logprob == pytest.approx(sum(score.token_logprobs), abs=1e-4)
    assert score.is_greedy and score.unscored_tokens == 0 and score.context_tokens == len(PROMPT)
    assert [top[0].token_id for top in score.top_logprobs] == result.token_ids


def test_text_score_tokenize_detokenize(text_client: Client) -> None:
    tokens = text_client.tokenize("Hello world, said Emma.")
    assert tokens.token_ids[0] == text_client.info().bos_token_id
    assert len(tokens.pieces) == len(tokens.token_ids)
    assert text_client.detokenize(tokens.token_ids) == "Hello world, said Emma."
    plain = text_client.tokenize("Hello", add_special_tokens=False)
    assert plain.token_ids == tokens.token_ids[1 : 1 + len(plain.token_ids)]
    score = text_client.score("The quick", " brown fox")
    assert score.context_tokens > 0 and len(score.token_ids) > 0 and score.total_logprob < 0


def test_info_and_health(ids_client: Client) -> None:
    info = ids_client.info()
    assert info.model_type == "hgrn2" and info.vocab_size == 512 and info.tokenizer == ""
    assert ids_client.health() == "SERVING"
    assert ids_client.health("hgrn2.v1.Inference") == "SERVING"


def test_errors_map_to_exceptions(ids_server: Server, ids_client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as bad:
        ids_client.generate(PROMPT, temperature=-1)
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature" in bad.value.details
    with pytest.raises(InvalidArgumentError, match=r"token_ids\[1\] = 512 is outside"):
        ids_client.generate([1, 512])
    with pytest.raises(InvalidArgumentError):  # a text prompt on a model without a tokenizer
        ids_client.generate("text")
    with pytest.raises(TypeError, match="temprature"):
        ids_client.generate(PROMPT, temprature=0)  # type: ignore[call-arg]
    with Client(ids_server.addr, timeout=0.05) as hurried:
        with pytest.raises(DeadlineExceededError):
            hurried.generate(PROMPT, max_new_tokens=4000, ignore_eos=True)
    with Client("127.0.0.1:1", timeout=5) as nowhere:
        with pytest.raises(UnavailableError) as down:
            nowhere.health()
    assert down.value.code == grpc.StatusCode.UNAVAILABLE


def test_async_client(ids_server: Server, ids_client: Client) -> None:
    want = ids_client.generate(PROMPT, max_new_tokens=12, seed=9, ignore_eos=True)

    async def main() -> None:
        async with AsyncClient(ids_server.addr, timeout=30) as client:
            assert await client.health() == "SERVING"
            results = await asyncio.gather(
                *(client.generate(PROMPT, max_new_tokens=12, seed=9, ignore_eos=True) for _ in range(4))
            )
            assert all(r.token_ids == want.token_ids for r in results)
            streamed = [t async for e in client.stream(PROMPT, max_new_tokens=12, seed=9, ignore_eos=True)
                        if isinstance(e, StreamChunk) for t in e.token_ids]
            assert streamed == want.token_ids
            score = await client.score(PROMPT, want.token_ids)
            assert score.token_logprobs == pytest.approx(want.logprobs, abs=1e-4)
            with pytest.raises(InvalidArgumentError):
                await client.generate(PROMPT, top_p=2)

    asyncio.run(main())
