"""The official openai Python SDK against hgrn2-server's OpenAI-compatible API over loopback:
completions and chat, whole and streamed, logprobs, n > 1 with seeds, the SDK's exception classes;
greedy text and log-probabilities against hgrn2-run on the demo model."""

from __future__ import annotations


import openai
import pytest

from conftest import DEMO, KEY, Server, post, run

PROMPT = "It is a truth universally acknowledged"


@pytest.fixture(scope="module")
def client(demo_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo_server.base_url, api_key="unused", max_retries=0)


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["hgrn2-demo"]
    assert client.models.retrieve("hgrn2-demo").id == "hgrn2-demo"


def test_greedy_completion_equals_hgrn2_run(client: openai.OpenAI, demo_server: Server) -> None:
    completion = client.completions.create(model="hgrn2-demo", prompt=PROMPT, max_tokens=16,
                                           temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason in ("length", "stop")
    want = run("--model", str(DEMO), "--prompt", PROMPT, "--max-new-tokens", "16",
               "--temperature", "0").rstrip("\n")
    assert choice.text == want
    # The prompt as the tokenizer's post-processor has it (BOS first), as hgrn2-run encodes it.
    assert completion.usage.prompt_tokens == post(demo_server, "/tokenize", {"prompt": PROMPT})["count"]
    assert completion.id.startswith("cmpl-") and completion.model == "hgrn2-demo"

    # Streamed: the chunks join to the same text; usage comes last, with no choices.
    chunks = list(client.completions.create(model="hgrn2-demo", prompt=PROMPT, max_tokens=16,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == \
        completion.usage.completion_tokens


def test_logprobs_and_echo_scoring_equal_hgrn2_run(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="hgrn2-demo", prompt=PROMPT, max_tokens=8,
                                           temperature=0, logprobs=3)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 8
    assert "".join(logprobs.tokens).replace("</s>", "") == completion.choices[0].text
    for lp, top in zip(logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) <= 4 and max(top.values()) == lp  # greedy: the chosen is the most likely
    assert logprobs.text_offset[0] == 0

    # echo + max_tokens 0 + logprobs: the prompt's own log-probabilities (lm-eval's way).
    scored = client.completions.create(model="hgrn2-demo", prompt=PROMPT, max_tokens=0,
                                       echo=True, logprobs=1)
    echo = scored.choices[0].logprobs
    assert scored.choices[0].text == PROMPT
    assert echo.token_logprobs[0] is None and echo.top_logprobs[0] is None
    reference = [float(line.split()[2]) for line in
                 run("--model", str(DEMO), "--prompt", PROMPT, "--score").splitlines()]
    assert len(reference) == len(echo.token_logprobs) - 1
    for got, want in zip(echo.token_logprobs[1:], reference):
        assert abs(got - want) < 1e-4


def test_n_samples_with_a_seed_repeat(client: openai.OpenAI) -> None:
    def sample() -> list[str]:
        c = client.completions.create(model="hgrn2-demo", prompt=PROMPT, max_tokens=12, n=3,
                                      seed=11, temperature=1.0)
        assert [ch.index for ch in c.choices] == [0, 1, 2]
        return [ch.text for ch in c.choices]

    first = sample()
    assert first == sample()
    assert len(set(first)) > 1
    several = client.completions.create(model="hgrn2-demo", prompt=[PROMPT, "Mr. Darcy"],
                                        max_tokens=4, n=2, temperature=0)
    assert [ch.index for ch in several.choices] == [0, 1, 2, 3]
    assert several.choices[0].text == several.choices[1].text  # greedy: the same twice


def test_chat_whole_and_streamed(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You write like Jane Austen."},
                {"role": "user", "content": "Describe Mr. Darcy."}]
    chat = client.chat.completions.create(model="hgrn2-demo", messages=messages,
                                          max_completion_tokens=12, temperature=0,
                                          logprobs=True, top_logprobs=2)
    choice = chat.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert len(choice.logprobs.content) == chat.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
    stream = client.chat.completions.create(model="hgrn2-demo", messages=messages,
                                            max_completion_tokens=12, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason
    # A stop string from the text itself ends it early.
    stop = choice.message.content.split()[2]
    stopped = client.chat.completions.create(model="hgrn2-demo", messages=messages,
                                             max_completion_tokens=12, temperature=0, stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    assert stop not in stopped.choices[0].message.content


def test_errors_are_the_sdks_exceptions(client: openai.OpenAI, keyed_server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="hgrn2-demo", prompt=PROMPT, n=0)
    assert bad.value.status_code == 400 and bad.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="hgrn2-demo", messages=[], max_tokens=2)
    assert bad.value.body["param"] == "messages"
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt-4", prompt=PROMPT)
    assert missing.value.body["code"] == "model_not_found"

    keyed = openai.OpenAI(base_url=keyed_server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        keyed.completions.create(model="tiny-a", prompt=[1, 2, 3], max_tokens=2)
    acme = openai.OpenAI(base_url=keyed_server.base_url, api_key=KEY, max_retries=0)
    assert acme.completions.create(model="tiny-a", prompt=[1, 2, 3], max_tokens=2).usage
    # acme may have one request at a time: a second while a stream is open is 429.
    stream = acme.completions.create(model="tiny-a", prompt=[1, 2, 3], max_tokens=100000,
                                     stream=True, extra_body={"ignore_eos": True})
    next(iter(stream))
    with pytest.raises(openai.RateLimitError):
        acme.completions.create(model="tiny-a", prompt=[1, 2, 3], max_tokens=2)
    stream.close()

    dead = openai.OpenAI(base_url="http://127.0.0.1:1/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        dead.models.list()
