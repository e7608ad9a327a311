#!/usr/bin/env python3
"""Soak driver for hgrn2-server: mixed load with faults from the client side, then leak checks.

Subcommands (each prints a summary and, with --json, writes it; exit status 1 when a check fails):

  load        For --duration seconds, --concurrency workers send a random mix: streamed
              generations (ids or text, n > 1, stop strings, logprobs), scores, tokenize and
              detokenize, cancellations mid-stream, short deadlines, slow readers, malformed
              requests (each with the gRPC code it must get), garbage snapshot imports, and
              session conversations (save_session_as, then resume by session_id; every few turns
              the resumed greedy tokens are compared with one request on the whole history),
              exports, imports and deletes. Meanwhile it samples the server's resident memory
              (/proc/PID/status VmRSS) and /metrics. Afterwards: running and queued sequences,
              used state slots and open streams back to 0 (no leaks); every acknowledged session
              save loadable with its token count (zero lost); resident memory after warm-up
              within --rss-tolerance.
  save-storm  Chained session saves as fast as the server takes them, each under a new id; every
              save the server acknowledged (its last stream message arrived: the save is durable
              before that message is sent) is appended to --ledger at once. Runs until
              --duration passes or the server goes away (the faults test kills it with -9).
  verify      Checks a --ledger (from save-storm, or load's --ledger) against a server: every
              acknowledged session is there with its token count, loads, and (for up to --exact
              of them) resumes exactly; every session the server lists loads too.

It talks to the server through the raw hgrn2.v1 stubs that the hgrn2_client package generates
(hgrn2_client._proto), so that it can send requests the friendly client would refuse.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from hgrn2_client._proto import inference_pb2 as pb
from hgrn2_client._proto import inference_pb2_grpc as pb_grpc
from hgrn2_client._proto import sessions_pb2 as spb
from hgrn2_client._proto import sessions_pb2_grpc as spb_grpc

OK = "OK"
CLIENT_CANCEL = "CLIENT_CANCELLED"  # the driver cancelled the call itself
HUNG = "HUNG"  # no answer within the driver's own watchdog: a wedge

TEXTS = [
    "Once upon a time there was a little robot who wanted to learn how to paint.",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "In the beginning, the village had only one well, and everyone shared it.",
    "Grüße aus München! Das Wetter ist heute schön, nicht wahr?",
    "日本語のテキストも少し混ぜておきます。",
    "She opened the old box and found a map, a key, and a letter addressed to her.",
    "def add(a, b):\n    return a + b\n",
    "Emoji too: 🙂🚀 and some symbols ∑ ∫ √.",
]


def now() -> float:
    return time.monotonic()


@dataclass
class Model:
    vocab: int
    has_tokenizer: bool
    limits: Any
    eos: list[int]


@dataclass
class Ledger:
    """Acknowledged session saves: id -> (num_tokens, whole history as token ids)."""

    sessions: dict[str, tuple[int, list[int]]] = field(default_factory=dict)
    path: str | None = None

    def ack(self, session_id: str, history: list[int]) -> None:
        self.sessions[session_id] = (len(history), list(history))
        if self.path:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps({"id": session_id, "num_tokens": len(history),
                                      "history": history}) + "\n")
                out.flush()

    def forget(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps({"id": session_id, "deleted": True}) + "\n")

    @staticmethod
    def read(path: str) -> Ledger:
        ledger = Ledger()
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if not line.endswith("\n"):
                    break  # the writer was killed mid-line: that save was never recorded
                entry = json.loads(line)
                if entry.get("deleted"):
                    ledger.sessions.pop(entry["id"], None)
                else:
                    ledger.sessions[entry["id"]] = (entry["num_tokens"], entry["history"])
        return ledger


class Tally:
    """Outcomes by request kind and gRPC code, and which of them the kind allows."""

    def __init__(self) -> None:
        self.by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        self.unexpected: list[dict[str, str]] = []
        self.unexpected_count = 0
        self.expected_errors: collections.Counter[str] = collections.Counter()
        self.unexpected_errors: collections.Counter[str] = collections.Counter()

    def add(self, kind: str, outcome: str, allowed: set[str], details: str = "") -> None:
        self.by_kind[kind][outcome] += 1
        if outcome == OK:
            return
        if outcome in allowed:
            self.expected_errors[outcome] += 1
            return
        self.unexpected_errors[outcome] += 1
        self.unexpected_count += 1
        if len(self.unexpected) < 30:
            self.unexpected.append({"kind": kind, "code": outcome, "details": details[:300]})

    def served(self) -> int:
        return sum(c[OK] for c in self.by_kind.values())

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.by_kind.values())


def code_of(error: grpc.aio.AioRpcError) -> str:
    return error.code().name


async def stream_generate(stub: pb_grpc.InferenceStub, request: pb.GenerateRequest,
                          timeout: float | None, read_delay: float = 0.0,
                          cancel_after: int | None = None
                          ) -> tuple[str, str, dict[int, list[int]], bool]:
    """Runs one Generate: (outcome, details, tokens by sample index, last message seen).

    read_delay: seconds slept after each message (a slow reader). cancel_after: messages read
    before the driver cancels the call itself."""
    tokens: dict[int, list[int]] = collections.defaultdict(list)
    finished = False
    call = stub.Generate(request, timeout=timeout)
    messages = 0
    try:
        async for response in call:
            tokens[response.index].extend(response.token_ids)
            if response.finish_reason != pb.FINISH_REASON_UNSPECIFIED:
                finished = True
            messages += 1
            if cancel_after is not None and messages >= cancel_after:
                call.cancel()
                return CLIENT_CANCEL, "", tokens, finished
            if read_delay:
                await asyncio.sleep(read_delay)
    except grpc.aio.AioRpcError as e:
        return code_of(e), e.details() or "", tokens, finished
    except asyncio.CancelledError:
        call.cancel()
        raise
    return OK, "", tokens, finished


async def unary(coro: Any) -> tuple[str, str, Any]:
    try:
        return OK, "", await coro
    except grpc.aio.AioRpcError as e:
        return code_of(e), e.details() or "", None


async def model_of(stub: pb_grpc.InferenceStub) -> Model:
    info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
    return Model(vocab=info.vocab_size, has_tokenizer=bool(info.tokenizer), limits=info.limits,
                 eos=list(info.eos_token_ids))


def random_ids(rng: random.Random, model: Model, low: int, high: int) -> list[int]:
    # Ids 3.. avoid the usual special tokens (unk, bos, eos) of small vocabularies.
    return [rng.randrange(3, model.vocab) for _ in range(rng.randint(low, high))]


class Worker:
    """One load loop: picks a request kind at random until the deadline."""

    def __init__(self, index: int, args: argparse.Namespace, model: Model, inference: Any,
                 sessions: Any, tally: Tally, ledger: Ledger,
                 exact: collections.Counter[str]) -> None:
        self.index = index
        self.args = args
        self.model = model
        self.inference = inference
        self.sessions = sessions
        self.tally = tally
        self.ledger = ledger
        self.exact = exact
        self.rng = random.Random(args.seed * 1000 + index)
        self.conversation = 0
        self.session_id = ""
        self.history: list[int] = []
        self.turns = 0
        self.kinds = [
            ("generate", 24, self.generate),
            ("score", 10, self.score),
            ("tokenize", 6, self.tokenize),
            ("cancel", 8, self.cancel),
            ("deadline", 6, self.deadline),
            ("slow_reader", 3, self.slow_reader),
            ("malformed", 10, self.malformed),
            ("session_turn", 18, self.session_turn),
            ("session_abandoned", 3, self.session_abandoned),
            ("session_ops", 5, self.session_ops),
            ("import_garbage", 3, self.import_garbage),
            ("session_race", 2, self.session_race),
            ("fresh_connection", 3, self.fresh_connection),
        ]

    async def run(self, deadline: float) -> None:
        if self.args.only:
            wanted = set(self.args.only.split(","))
            unknown = wanted - {k[0] for k in self.kinds}
            if unknown:
                raise SystemExit(f"--only: no request kind {', '.join(sorted(unknown))}")
            self.kinds = [k for k in self.kinds if k[0] in wanted]
        weights = [w for _, w, _ in self.kinds]
        while now() < deadline:
            name, _, action = self.rng.choices(self.kinds, weights)[0]
            try:
                await asyncio.wait_for(action(), self.args.watchdog)
            except asyncio.TimeoutError:
                self.tally.add(name, HUNG, set(), f"no answer within {self.args.watchdog} s")

    def prompt(self, request: pb.GenerateRequest) -> None:
        if self.model.has_tokenizer and self.rng.random() < 0.5:
            request.text = self.rng.choice(TEXTS)
        else:
            request.token_ids.ids.extend(random_ids(self.rng, self.model, 1, 48))

    def sampling(self, request: pb.GenerateRequest) -> None:
        r = self.rng.random()
        if r < 0.3:
            request.sampling.temperature = 0
        elif r < 0.8:
            request.sampling.temperature = self.rng.uniform(0.5, 1.2)
            request.sampling.top_k = self.rng.choice([0, 10, 50])
            request.sampling.top_p = self.rng.choice([1.0, 0.9])
            request.sampling.seed = self.rng.randrange(1 << 32)
        else:
            request.sampling.repetition_penalty = 1.1
            request.sampling.presence_penalty = 0.5
            request.sampling.min_p = 0.05

    async def generate(self) -> None:
        request = pb.GenerateRequest(max_new_tokens=self.rng.randint(1, 48))
        self.prompt(request)
        self.sampling(request)
        if self.rng.random() < 0.2:
            request.n = self.rng.randint(2, 3)
        if self.rng.random() < 0.2:
            request.logprobs = self.rng.randint(0, 5)
        if self.rng.random() < 0.2:
            request.stop.append(self.rng.choice(["the", ".", "\n", "zz"]))
            request.stop_token_ids.append(self.rng.randrange(3, self.model.vocab))
        request.ignore_eos = self.rng.random() < 0.5
        request.priority = self.rng.randint(-1, 1)
        outcome, details, _, finished = await stream_generate(self.inference, request, 60)
        if outcome == OK and not finished:
            outcome, details = "NO_LAST_MESSAGE", "the stream ended without a finish_reason"
        self.tally.add("generate", outcome, set(), details)

    async def score(self) -> None:
        request = pb.ScoreRequest(top_logprobs=self.rng.choice([0, 0, 3]))
        if self.model.has_tokenizer and self.rng.random() < 0.4:
            request.context_text = self.rng.choice(TEXTS)
            request.continuation_text = " and then it rained."
        else:
            if self.rng.random() < 0.7:
                request.context_ids.ids.extend(random_ids(self.rng, self.model, 1, 40))
            request.continuation_ids.ids.extend(random_ids(self.rng, self.model, 2, 20))
        outcome, details, _ = await unary(self.inference.Score(request, timeout=60))
        self.tally.add("score", outcome, set(), details)

    async def tokenize(self) -> None:
        if self.model.has_tokenizer and self.rng.random() < 0.5:
            request = pb.TokenizeRequest(text=self.rng.choice(TEXTS))
            outcome, details, _ = await unary(self.inference.Tokenize(request, timeout=30))
            self.tally.add("tokenize", outcome, set(), details)
        else:
            request = pb.DetokenizeRequest(token_ids=random_ids(self.rng, self.model, 1, 40))
            outcome, details, _ = await unary(self.inference.Detokenize(request, timeout=30))
            self.tally.add("detokenize", outcome, set(), details)

    def long_request(self) -> pb.GenerateRequest:
        request = pb.GenerateRequest(max_new_tokens=self.rng.randint(100, 400), ignore_eos=True)
        self.prompt(request)
        self.sampling(request)
        return request

    async def cancel(self) -> None:
        outcome, details, _, _ = await stream_generate(
            self.inference, self.long_request(), 60, cancel_after=self.rng.randint(1, 6))
        self.tally.add("cancel", outcome, {CLIENT_CANCEL}, details)

    async def deadline(self) -> None:
        outcome, details, _, _ = await stream_generate(
            self.inference, self.long_request(), self.rng.uniform(0.01, 0.3))
        self.tally.add("deadline", outcome, {"DEADLINE_EXCEEDED"}, details)

    async def slow_reader(self) -> None:
        request = pb.GenerateRequest(max_new_tokens=self.rng.randint(20, 60), ignore_eos=True)
        self.prompt(request)
        outcome, details, _, finished = await stream_generate(
            self.inference, request, 120, read_delay=self.rng.uniform(0.05, 0.2))
        if outcome == OK and not finished:
            outcome, details = "NO_LAST_MESSAGE", "the stream ended without a finish_reason"
        self.tally.add("slow_reader", outcome, set(), details)

    def malformed_cases(self) -> list[tuple[str, Any, str]]:
        """(name, request, the code it must get); built fresh so each draws new values."""
        limits, vocab = self.model.limits, self.model.vocab
        ids = random_ids(self.rng, self.model, 1, 8)
        missing = "missing-%d" % self.rng.randrange(1 << 30)
        bias = pb.SamplingParams(logit_bias={vocab + 5: 1.0})
        stops = ["s%d" % i for i in range(limits.max_stop_strings + 1)]
        long_prompt = pb.TokenIds(ids=[5] * (limits.max_prompt_tokens + 1))

        def gen(**fields: Any) -> pb.GenerateRequest:
            request = pb.GenerateRequest(**fields)
            if not request.HasField("text") and not request.HasField("token_ids"):
                request.token_ids.ids.extend(ids)
            return request

        bad = "INVALID_ARGUMENT"
        return [
            ("no_prompt", pb.GenerateRequest(), bad),
            ("empty_ids", pb.GenerateRequest(token_ids=pb.TokenIds()), bad),
            ("id_out_of_vocab", gen(token_ids=pb.TokenIds(ids=ids + [vocab])), bad),
            ("negative_id", gen(token_ids=pb.TokenIds(ids=[-self.rng.randint(1, 9)])), bad),
            ("top_p_2", gen(sampling=pb.SamplingParams(top_p=2)), bad),
            ("temperature_negative", gen(sampling=pb.SamplingParams(temperature=-1)), bad),
            ("temperature_nan", gen(sampling=pb.SamplingParams(temperature=float("nan"))), bad),
            ("repetition_penalty_0", gen(sampling=pb.SamplingParams(repetition_penalty=0)), bad),
            ("logit_bias_out_of_vocab", gen(sampling=bias), bad),
            ("max_new_tokens_over", gen(max_new_tokens=limits.max_new_tokens + 1), bad),
            ("logprobs_over", gen(logprobs=limits.max_logprobs + 1), bad),
            ("n_over", gen(n=limits.max_n + 1), bad),
            ("too_many_stops", gen(stop=stops), bad),
            ("stop_too_long", gen(stop=["x" * (limits.max_stop_string_bytes + 1)]), bad),
            ("prompt_over", gen(token_ids=long_prompt), bad),
            ("session_dotdot", gen(session_id="../etc/passwd"), bad),
            ("session_too_long", gen(session_id="s" * 200), bad),
            ("save_hidden", gen(save_session_as=".hidden"), bad),
            ("save_slash", gen(save_session_as="a/b"), bad),
            ("save_with_n", gen(n=2, save_session_as="never-%d" % self.index), bad),
            ("session_missing", gen(session_id=missing), "NOT_FOUND"),
            ("score_nothing", pb.ScoreRequest(continuation_ids=pb.TokenIds(ids=[7])), bad),
            ("score_no_continuation", pb.ScoreRequest(context_ids=pb.TokenIds(ids=ids)), bad),
            ("detokenize_out_of_vocab", pb.DetokenizeRequest(token_ids=[vocab + 1]), bad),
            ("get_bad_id", spb.GetSessionRequest(session_id="bad id"), bad),
            ("get_missing", spb.GetSessionRequest(session_id=missing), "NOT_FOUND"),
            ("delete_missing", spb.DeleteSessionRequest(session_id=missing), "NOT_FOUND"),
            ("export_bad_id", spb.ExportSessionRequest(session_id="."), bad),
        ]

    async def malformed(self) -> None:
        name, request, want = self.rng.choice(self.malformed_cases())
        if isinstance(request, pb.GenerateRequest):
            outcome, details, _, _ = await stream_generate(self.inference, request, 30)
        elif isinstance(request, pb.ScoreRequest):
            outcome, details, _ = await unary(self.inference.Score(request, timeout=30))
        elif isinstance(request, pb.DetokenizeRequest):
            outcome, details, _ = await unary(self.inference.Detokenize(request, timeout=30))
        elif isinstance(request, spb.GetSessionRequest):
            outcome, details, _ = await unary(self.sessions.GetSession(request, timeout=30))
        elif isinstance(request, spb.DeleteSessionRequest):
            outcome, details, _ = await unary(self.sessions.DeleteSession(request, timeout=30))
        else:
            outcome, details, _ = await unary(collect_export(self.sessions, request))
        # A malformed request that succeeds is as wrong as a good one that fails.
        if outcome == OK:
            outcome = "OK_BUT_MALFORMED"
        elif outcome == want:
            details = ""
        if not details and outcome != want:
            details = f"wanted {want}"
        self.tally.add(f"malformed:{name}", outcome, {want}, details)

    async def session_turn(self) -> None:
        """One turn of this worker's conversation, saved under its id; a new conversation after a
        few turns. Every third turn, the resumed greedy tokens are checked against one request
        on the whole history."""
        if not self.session_id or self.turns >= 8 or len(self.history) > 400:
            self.conversation += 1
            self.session_id = f"w{self.index}-c{self.conversation}"
            self.history, self.turns = [], 0
        prompt = random_ids(self.rng, self.model, 1, 16)
        request = pb.GenerateRequest(max_new_tokens=self.rng.randint(1, 24), ignore_eos=True,
                                     save_session_as=self.session_id)
        request.token_ids.ids.extend(prompt)
        request.sampling.temperature = 0
        if self.turns > 0:
            request.session_id = self.session_id
        outcome, details, tokens, finished = await stream_generate(self.inference, request, 120)
        if outcome == OK and not finished:
            outcome, details = "NO_LAST_MESSAGE", "the stream ended without a finish_reason"
        self.tally.add("session_turn", outcome, set(), details)
        if outcome != OK:
            self.session_id = ""  # its saved version is unknown now; start another
            return
        generated = tokens[0]
        if self.turns > 0 and self.turns % 3 == 0:
            whole = pb.GenerateRequest(max_new_tokens=request.max_new_tokens, ignore_eos=True)
            whole.token_ids.ids.extend(self.history + prompt)
            whole.sampling.temperature = 0
            check, details, expected, _ = await stream_generate(self.inference, whole, 120)
            self.tally.add("session_whole_history", check, set(), details)
            if check == OK:
                self.exact["checked"] += 1
                if expected[0] != generated:
                    self.exact["mismatched"] += 1
                    self.tally.add("session_exactness", "MISMATCH", set(),
                                   f"{self.session_id}: resumed {generated} whole {expected[0]}")
        self.history += prompt + generated
        self.turns += 1
        self.ledger.ack(self.session_id, self.history)

    async def session_abandoned(self) -> None:
        """A save that the client walks away from (cancel or deadline): whatever happens to it,
        the server must stay consistent. Its id is never checked."""
        request = self.long_request()
        request.save_session_as = f"abandoned-{self.index}-{self.rng.randrange(1 << 20)}"
        if self.rng.random() < 0.5:
            outcome, details, _, _ = await stream_generate(
                self.inference, request, 60, cancel_after=self.rng.randint(1, 4))
        else:
            outcome, details, _, _ = await stream_generate(
                self.inference, request, self.rng.uniform(0.02, 0.3))
        self.tally.add("session_abandoned", outcome, {CLIENT_CANCEL, "DEADLINE_EXCEEDED"}, details)
        # The abandoned call must release its id: a short save to it succeeds once the server
        # has seen the cancel (ABORTED until then, for at most a few seconds).
        retry = pb.GenerateRequest(max_new_tokens=1, save_session_as=request.save_session_as)
        retry.token_ids.ids.append(5)
        for _ in range(50):
            outcome, details, _, _ = await stream_generate(self.inference, retry, 30)
            if outcome != "ABORTED":
                break
            await asyncio.sleep(0.1)
        self.tally.add("session_abandoned_reuse", outcome, set(), details)

    async def session_ops(self) -> None:
        r = self.rng.random()
        if r < 0.3:
            page_size = self.rng.choice([0, 1, 10, 1000])
            outcome, details, _ = await unary(
                self.sessions.ListSessions(spb.ListSessionsRequest(page_size=page_size), timeout=30))
            self.tally.add("session_list", outcome, set(), details)
            return
        if not self.session_id or self.session_id not in self.ledger.sessions:
            return
        if r < 0.6:
            outcome, details, info = await unary(
                self.sessions.GetSession(spb.GetSessionRequest(session_id=self.session_id),
                                         timeout=30))
            if outcome == OK and info.num_tokens != len(self.history):
                outcome = "WRONG_INFO"
                details = f"num_tokens {info.num_tokens}, saved {len(self.history)}"
            self.tally.add("session_get", outcome, set(), details)
            return
        # Export this conversation and import it under another id; sometimes delete the copy.
        outcome, details, data = await unary(
            collect_export(self.sessions, spb.ExportSessionRequest(session_id=self.session_id)))
        self.tally.add("session_export", outcome, set(), details)
        if outcome != OK:
            return
        copy_id = f"{self.session_id}-copy"
        outcome, details, info = await unary(import_snapshot(self.sessions, copy_id, data))
        self.tally.add("session_import", outcome, set(), details)
        if outcome != OK:
            return
        self.ledger.ack(copy_id, self.history)
        if self.rng.random() < 0.3:
            outcome, details, _ = await unary(
                self.sessions.DeleteSession(spb.DeleteSessionRequest(session_id=copy_id),
                                            timeout=30))
            self.tally.add("session_delete", outcome, set(), details)
            if outcome == OK:
                self.ledger.forget(copy_id)

    async def session_race(self) -> None:
        """Two saves of one id at once: each OK or ABORTED (not both ABORTED), and the session
        holds what one of the successful ones saved."""
        race_id = f"race-{self.index}"
        requests, prompts = [], []
        for _ in range(2):
            prompt = random_ids(self.rng, self.model, 1, 16)
            request = pb.GenerateRequest(max_new_tokens=self.rng.randint(1, 32), ignore_eos=True,
                                         save_session_as=race_id)
            request.token_ids.ids.extend(prompt)
            requests.append(request)
            prompts.append(prompt)
        results = await asyncio.gather(*(stream_generate(self.inference, r, 60) for r in requests))
        for outcome, details, _, _ in results:
            self.tally.add("session_race", outcome, {"ABORTED"}, details)
        saved = {len(p) + len(tokens[0]) for p, (outcome, _, tokens, _) in zip(prompts, results)
                 if outcome == OK}
        if not saved:
            self.tally.add("session_race_result", "BOTH_ABORTED", set(), "neither save succeeded")
            return
        outcome, details, info = await unary(
            self.sessions.GetSession(spb.GetSessionRequest(session_id=race_id), timeout=30))
        if outcome == OK and info.num_tokens not in saved:
            outcome, details = "WRONG_INFO", f"num_tokens {info.num_tokens}, saved {sorted(saved)}"
        self.tally.add("session_race_result", outcome, set(), details)

    async def fresh_connection(self) -> None:
        """A request on a channel of its own, closed afterwards: connection churn."""
        async with channel(self.args.addr) as ch:
            request = pb.GenerateRequest(max_new_tokens=self.rng.randint(1, 8))
            self.prompt(request)
            outcome, details, _, _ = await stream_generate(pb_grpc.InferenceStub(ch), request, 60)
        self.tally.add("fresh_connection", outcome, set(), details)

    async def import_garbage(self) -> None:
        """Snapshots that are not: random bytes, a real one truncated, one with a flipped byte."""
        target = f"garbage-{self.index}"
        source = self.session_id if self.session_id in self.ledger.sessions else ""
        data = b""
        if source:
            outcome, _, data = await unary(
                collect_export(self.sessions, spb.ExportSessionRequest(session_id=source)))
            if outcome != OK:
                data = b""
        if data and self.rng.random() < 0.5:
            name = "truncated"
            data = data[: self.rng.randrange(1, len(data))]
        elif data:
            name = "flipped"
            flipped = bytearray(data)
            flipped[self.rng.randrange(len(flipped))] ^= 1 << self.rng.randrange(8)
            data = bytes(flipped)
        else:
            name = "random"
            data = self.rng.randbytes(self.rng.randint(1, 5000))
        outcome, details, _ = await unary(import_snapshot(self.sessions, target, data))
        if outcome == OK:
            outcome = "OK_BUT_MALFORMED"
        self.tally.add(f"import_garbage:{name}", outcome, {"INVALID_ARGUMENT"}, details)


async def collect_export(sessions: Any, request: spb.ExportSessionRequest) -> bytes:
    return b"".join([chunk.data async for chunk in sessions.ExportSession(request, timeout=60)])


async def import_snapshot(sessions: Any, session_id: str, data: bytes) -> Any:
    step = 64 * 1024
    chunks = [spb.SessionChunk(session_id=session_id if i == 0 else "", data=data[i : i + step])
              for i in range(0, max(len(data), 1), step)]
    return await sessions.ImportSession(iter(chunks), timeout=60)


# --- the server's side: resident memory and /metrics -------------------------------------------

GAUGES = ("hgrn2_running_sequences", "hgrn2_queue_depth", "hgrn2_state_slots_used",
          "hgrn2_active_streams", "hgrn2_swapped_sequences")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def scrape(url: str) -> dict[str, Any]:
    """The gauges above and hgrn2_requests_total by method and code."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, Any] = {}
    requests: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, _, value = line.rpartition(" ")
        if name in GAUGES:
            values[name] = float(value)
        elif name.startswith("hgrn2_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', name))
            requests[labels.get("rpc", "?")][labels.get("code", "?")] = float(value)
    values["requests_total"] = requests
    return values


async def sample_server(args: argparse.Namespace, start: float, stop: asyncio.Event,
                        series: list[dict[str, Any]]) -> None:
    while True:
        point: dict[str, Any] = {"t": round(now() - start, 1)}
        if args.pid:
            point["rss_kib"] = rss_kib(args.pid)
        if args.metrics:
            gauges = await asyncio.to_thread(scrape, args.metrics)
            point.update({k.removeprefix("hgrn2_"): v for k, v in gauges.items() if k in GAUGES})
        series.append(point)
        try:
            await asyncio.wait_for(stop.wait(), args.sample_interval)
            return
        except asyncio.TimeoutError:
            pass


def rss_drift(series: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """Resident memory after warm-up: the median of the last tenth of the samples against the
    median of the first tenth (after warm-up), and the largest sample against that start."""
    after = [p["rss_kib"] for p in series if p["t"] >= warmup and "rss_kib" in p]
    if len(after) < 4:
        return {"samples_after_warmup": len(after), "drift": None}
    tenth = max(2, len(after) // 10)
    start, end = statistics.median(after[:tenth]), statistics.median(after[-tenth:])
    times = [p["t"] for p in series if p["t"] >= warmup and "rss_kib" in p]
    slope = statistics.linear_regression(times, after).slope * 60 if len(set(times)) > 1 else 0.0
    return {"samples_after_warmup": len(after), "start_kib": start, "end_kib": end,
            "max_kib": max(after), "min_kib": min(after), "drift": (end - start) / start,
            "max_over_start": (max(after) - start) / start,
            "slope_kib_per_minute": round(slope, 1)}


async def wait_idle(url: str, seconds: float) -> dict[str, float]:
    """Polls /metrics until every gauge is 0 or `seconds` pass; the last values."""
    deadline = now() + seconds
    while True:
        gauges = await asyncio.to_thread(scrape, url)
        values = {k.removeprefix("hgrn2_"): gauges.get(k, 0.0) for k in GAUGES}
        if all(v == 0 for v in values.values()) or now() >= deadline:
            return values
        await asyncio.sleep(0.2)


# --- sessions at the end -------------------------------------------------------------------------

async def verify_sessions(inference: Any, sessions: Any, ledger: Ledger, exact: int,
                          tally: Tally, seed: int) -> dict[str, Any]:
    """Every acknowledged session: its token count, a load, and for `exact` of them an exact
    resume; every listed session loads."""
    rng = random.Random(seed)
    lost: list[str] = []
    wrong: list[str] = []
    exact_checked = exact_mismatched = 0
    ids = sorted(ledger.sessions)
    exact_ids = set(rng.sample(ids, min(exact, len(ids))))
    for session_id in ids:
        num_tokens, history = ledger.sessions[session_id]
        outcome, details, info = await unary(
            sessions.GetSession(spb.GetSessionRequest(session_id=session_id), timeout=60))
        if outcome == "NOT_FOUND":
            lost.append(session_id)
            continue
        if outcome != OK:
            wrong.append(f"{session_id}: GetSession {outcome} {details}")
            continue
        if info.num_tokens != num_tokens:
            wrong.append(f"{session_id}: {info.num_tokens} tokens, acknowledged {num_tokens}")
            continue
        prompt = [rng.randrange(3, 100)]
        resumed = pb.GenerateRequest(session_id=session_id, max_new_tokens=4, ignore_eos=True)
        resumed.token_ids.ids.extend(prompt)
        resumed.sampling.temperature = 0
        outcome, details, tokens, _ = await stream_generate(inference, resumed, 120)
        if outcome != OK:
            wrong.append(f"{session_id}: does not load: {outcome} {details}")
            continue
        if session_id in exact_ids:
            whole = pb.GenerateRequest(max_new_tokens=4, ignore_eos=True)
            whole.token_ids.ids.extend(history + prompt)
            whole.sampling.temperature = 0
            outcome, details, expected, _ = await stream_generate(inference, whole, 120)
            exact_checked += 1
            if outcome != OK or expected[0] != tokens[0]:
                exact_mismatched += 1
                wrong.append(f"{session_id}: resumed {tokens[0]}, whole history {expected.get(0)} "
                             f"({outcome} {details})")
    listed_bad: list[str] = []
    listed_ids: list[str] = []
    request = spb.ListSessionsRequest(page_size=100)
    while True:
        outcome, details, listed = await unary(sessions.ListSessions(request, timeout=60))
        if outcome != OK:
            listed_bad.append(f"ListSessions {outcome} {details}")
            break
        listed_ids += [s.session_id for s in listed.sessions]
        if not listed.next_page_token:
            break
        request.page_token = listed.next_page_token
    for session_id in listed_ids:
        if session_id in ledger.sessions:
            continue
        load = pb.ScoreRequest(session_id=session_id, continuation_ids=pb.TokenIds(ids=[5]))
        outcome, details, _ = await unary(inference.Score(load, timeout=60))
        if outcome != OK:
            listed_bad.append(f"{session_id}: listed but does not load: {outcome} {details}")
    for problem in wrong + listed_bad:
        tally.add("session_verify", "BAD_SESSION", set(), problem)
    return {"acknowledged": len(ids), "lost": len(lost), "lost_ids": lost[:20],
            "damaged": len(wrong), "damaged_samples": wrong[:10], "listed": len(listed_ids),
            "listed_unloadable": listed_bad[:10], "exact_checked": exact_checked,
            "exact_mismatched": exact_mismatched}


# --- subcommands ---------------------------------------------------------------------------------

def channel(addr: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(addr, options=[("grpc.max_receive_message_length", 64 << 20)])


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    async with channel(args.addr) as ch:
        inference, sessions = pb_grpc.InferenceStub(ch), spb_grpc.SessionsStub(ch)
        model = await model_of(inference)
        tally, ledger, exact = Tally(), Ledger(path=args.ledger), collections.Counter[str]()
        start = now()
        series: list[dict[str, Any]] = []
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(sample_server(args, start, stop_sampling, series))
        workers = [Worker(i, args, model, inference, sessions, tally, ledger, exact)
                   for i in range(args.concurrency)]
        deadline = start + args.duration
        progress = asyncio.create_task(report_progress(args, start, tally, series))
        await asyncio.gather(*(w.run(deadline) for w in workers))
        load_seconds = now() - start
        progress.cancel()
        idle = await wait_idle(args.metrics, 30) if args.metrics else {}
        stop_sampling.set()
        await sampler
        final_metrics = await asyncio.to_thread(scrape, args.metrics) if args.metrics else {}
        verified = await verify_sessions(inference, sessions, ledger, args.exact, tally, args.seed)

    drift = rss_drift(series, args.duration * args.warmup_fraction)
    failures = []
    if tally.unexpected_count:
        failures.append(f"{tally.unexpected_count} unexpected outcomes")
    leaks = {k: v for k, v in idle.items() if v != 0}
    if leaks:
        failures.append(f"not idle after the load: {leaks}")
    if verified["lost"] or verified["damaged"] or verified["listed_unloadable"]:
        failures.append(f"sessions: {verified['lost']} lost, {verified['damaged']} damaged, "
                        f"{len(verified['listed_unloadable'])} listed but unloadable")
    if drift.get("drift") is not None and drift["drift"] > args.rss_tolerance:
        failures.append(f"resident memory grew {drift['drift']:.1%} after warm-up "
                        f"(tolerance {args.rss_tolerance:.0%})")
    if args.pid and drift.get("drift") is None:
        failures.append("too few resident memory samples after warm-up")
    return {
        "command": "load", "addr": args.addr, "duration_s": round(load_seconds, 1),
        "concurrency": args.concurrency, "seed": args.seed,
        "requests": {"total": tally.total(), "served_ok": tally.served(),
                     "per_second": round(tally.total() / load_seconds, 1)},
        "errors_expected": dict(tally.expected_errors),
        "errors_unexpected": dict(tally.unexpected_errors),
        "unexpected_samples": tally.unexpected,
        "by_kind": {k: dict(v) for k, v in sorted(tally.by_kind.items())},
        "server_requests_total": final_metrics.get("requests_total", {}),
        "idle_after_load": idle,
        "rss": {"warmup_s": args.duration * args.warmup_fraction,
                "tolerance": args.rss_tolerance, **drift},
        "sessions": {**verified, "exact_during_load": dict(exact)},
        "series": series,
        "failures": failures, "pass": not failures,
    }


async def report_progress(args: argparse.Namespace, start: float, tally: Tally,
                          series: list[dict[str, Any]]) -> None:
    while True:
        await asyncio.sleep(args.progress_interval)
        last = series[-1] if series else {}
        print(f"soak: {now() - start:6.0f} s  {tally.total()} requests, {tally.served()} ok, "
              f"{tally.unexpected_count} unexpected, rss {last.get('rss_kib', '?')} KiB, "
              f"running {last.get('running_sequences', '?')}", file=sys.stderr, flush=True)


async def run_save_storm(args: argparse.Namespace) -> dict[str, Any]:
    ledger = Ledger(path=args.ledger)
    counts: collections.Counter[str] = collections.Counter()
    deadline = now() + args.duration

    async def chain(index: int, inference: Any) -> None:
        rng = random.Random(args.seed * 1000 + index)
        model = await model_of(inference)
        previous, history, saves = "", [], 0
        while now() < deadline:
            if saves % 6 == 0:
                previous, history = "", []
            saves += 1
            session_id = f"k{args.seed}-{index}-{saves}"  # unique across runs
            prompt = random_ids(rng, model, 1, 12)
            request = pb.GenerateRequest(max_new_tokens=rng.randint(1, 8), ignore_eos=True,
                                         session_id=previous, save_session_as=session_id)
            request.token_ids.ids.extend(prompt)
            request.sampling.temperature = 0
            outcome, _, tokens, finished = await stream_generate(inference, request, 60)
            if finished:  # the last message: the server had made the save durable
                history = history + prompt + tokens[0]
                ledger.ack(session_id, history)
                previous = session_id
                counts["acknowledged"] += 1
            counts[outcome] += 1
            if outcome == "UNAVAILABLE":
                return  # the server is gone

    async with channel(args.addr) as ch:
        inference = pb_grpc.InferenceStub(ch)
        await asyncio.gather(*(chain(i, inference) for i in range(args.concurrency)))
    return {"command": "save-storm", "outcomes": dict(counts), "pass": True, "failures": []}


async def run_verify(args: argparse.Namespace) -> dict[str, Any]:
    ledger = Ledger.read(args.ledger)
    tally = Tally()
    async with channel(args.addr) as ch:
        verified = await verify_sessions(pb_grpc.InferenceStub(ch), spb_grpc.SessionsStub(ch),
                                         ledger, args.exact, tally, args.seed)
    failures = [] if not tally.unexpected_count else [f"{tally.unexpected_count} bad sessions"]
    if verified["lost"]:
        failures.append(f"{verified['lost']} acknowledged sessions lost")
    return {"command": "verify", "sessions": verified, "problems": tally.unexpected,
            "failures": failures, "pass": not failures}


def print_summary(result: dict[str, Any]) -> None:
    if "by_kind" in result:
        print("outcomes by kind:")
        for kind, outcomes in result["by_kind"].items():
            print(f"  {kind:40s} " + ", ".join(f"{c} {n}" for c, n in sorted(outcomes.items())))
    for key in ("duration_s", "requests", "errors_expected", "errors_unexpected",
                "unexpected_samples", "idle_after_load", "rss", "sessions", "outcomes", "problems"):
        if key in result:
            print(f"{key}: {json.dumps(result[key], sort_keys=True)}")
    print(f"soak {result['command']}: " +
          ("PASS" if result["pass"] else "FAIL: " + "; ".join(result["failures"])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--addr", required=True, help="the server, host:port")
    common.add_argument("--seed", type=int, default=1)
    common.add_argument("--json", help="also write the result here")
    common.add_argument("--ledger", help="acknowledged session saves, one JSON line each")
    common.add_argument("--exact", type=int, default=20,
                        help="sessions checked for an exact resume at the end")
    load = sub.add_parser("load", parents=[common], help="the mixed soak load")
    load.add_argument("--duration", type=float, default=60, help="seconds of load")
    load.add_argument("--concurrency", type=int, default=8, help="workers sending requests")
    load.add_argument("--pid", type=int, help="the server's process id (resident memory)")
    load.add_argument("--metrics", help="the server's /metrics URL")
    load.add_argument("--sample-interval", type=float, default=2.0)
    load.add_argument("--progress-interval", type=float, default=30.0)
    load.add_argument("--warmup-fraction", type=float, default=1 / 3,
                      help="share of --duration before resident memory must stay flat")
    load.add_argument("--rss-tolerance", type=float, default=0.05,
                      help="largest allowed growth of resident memory after warm-up")
    load.add_argument("--only", help="comma-separated request kinds to send (default: all), "
                      "e.g. generate,fresh_connection, to find which one grows memory")
    load.add_argument("--watchdog", type=float, default=180,
                      help="seconds one request may take before it counts as HUNG")
    storm = sub.add_parser("save-storm", parents=[common], help="chained saves until stopped")
    storm.add_argument("--duration", type=float, default=60)
    storm.add_argument("--concurrency", type=int, default=4)
    sub.add_parser("verify", parents=[common], help="check a ledger against a server")
    args = parser.parse_args()
    if args.command in ("save-storm", "verify") and not args.ledger:
        parser.error("--ledger is required")
    runner = {"load": run_load, "save-storm": run_save_storm, "verify": run_verify}[args.command]
    result = asyncio.run(runner(args))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=1, sort_keys=True)
    print_summary(result)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
