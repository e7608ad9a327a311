"""Sessions across replicas: several hgrn2-server processes on loopback sharing one redis-server,
and again sharing one session directory, each with a memory cache in front (the Kubernetes
components' --session-store memory,redis and memory,dir).

Scenarios, for each shared store:
  ping-pong  one conversation continued on replica after replica (2, then 4 of them), greedy:
             the concatenated output equals one uninterrupted generation by hgrn2-run (the CPU
             reference); a replica resumes what another saved, never its own cached copy.
  race       N clients (one per replica) resume the same session at the same revision and each
             saves it back: exactly one wins per round, the others get ABORTED, and the session
             ends holding the winners' history. The interleaving is forced, not hoped for: the
             saves are held back (Redis paused for writes; the directory's lock held by this
             test) until every replica has read the session, which the replicas' own
             hgrn2_session_loads_total says.
Needs HGRN2_SERVER, HGRN2_RUN, HGRN2_TEST_DATA_DIR and redis-server on PATH; run by the venv's
python (hgrn2_client for the generated stubs). Exit 77 when something needed is missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

try:
    import grpc
    from hgrn2_client._proto import inference_pb2 as pb
    from hgrn2_client._proto import inference_pb2_grpc as pb_grpc
    from hgrn2_client._proto import sessions_pb2 as spb
    from hgrn2_client._proto import sessions_pb2_grpc as spb_grpc
except ImportError as e:  # no venv: scripts/install-python makes it
    print(f"skipping: {e}")
    sys.exit(77)

SERVER = os.environ.get("HGRN2_SERVER", "")
RUN = os.environ.get("HGRN2_RUN", "")
DATA = Path(os.environ.get("HGRN2_TEST_DATA_DIR", ""))
MODEL = DATA / "tiny-a"
PROMPT = [5, 17, 301, 44, 9, 120, 77]

failures = 0


def check(name: str, ok: bool) -> bool:
    global failures
    print(("ok: " if ok else "FAIL: ") + name, flush=True)
    if not ok:
        failures += 1
    return ok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, seconds: float, what: str) -> bool:
    """Polls `condition` (a state this test waits for, not a race it hopes for)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    print(f"timed out after {seconds} s waiting for {what}", flush=True)
    return False


class Redis:
    """A redis-server of this test on a free port; persistence optional."""

    def __init__(self, folder: Path, persistent: bool = False) -> None:
        self.port = free_port()
        self.folder = folder
        self.persistent = persistent
        folder.mkdir(parents=True, exist_ok=True)
        self.start()

    def start(self) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no"])
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.folder), "--loglevel", "warning", *persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(lambda: self.cli("PING") == "PONG", 20, "redis-server"):
            raise RuntimeError("redis-server did not start")

    def cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                              text=True)
        return done.stdout.strip()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


class Replica:
    """One hgrn2-server (CPU, tiny-a) with the given session flags."""

    def __init__(self, log: Path, store_args: list[str]) -> None:
        self.log = log
        self.store_args = store_args
        self.start()

    def start(self) -> None:
        self.log_file = self.log.open("w")
        self.process = subprocess.Popen(
            [SERVER, "--model", str(MODEL), "--host", "127.0.0.1", "--port", "0", "--device",
             "cpu", "--metrics-port", str(free_port()), *self.store_args],
            stdout=subprocess.DEVNULL, stderr=self.log_file)
        deadline = time.monotonic() + 60
        pattern = re.compile(r"serving .* on 127\.0\.0\.1:(\d+), metrics on 127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            match = pattern.search(self.log.read_text())
            if match:
                self.port, self.metrics_port = int(match.group(1)), int(match.group(2))
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"hgrn2-server exited; its log:\n{self.log.read_text()}")
            time.sleep(0.05)
        else:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"hgrn2-server did not start; its log:\n{self.log.read_text()}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.inference = pb_grpc.InferenceStub(self.channel)
        self.sessions = spb_grpc.SessionsStub(self.channel)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as response:
            text = response.read().decode()
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def stop(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.channel.close()
        self.log_file.close()


class Outcome:
    def __init__(self, code: str, details: str, ids: list[int], last: pb.GenerateResponse | None):
        self.code, self.details, self.ids, self.last = code, details, ids, last

    @property
    def ok(self) -> bool:
        return self.code == "OK"


def generate(replica: Replica, ids: list[int], max_new_tokens: int, **fields) -> Outcome:
    """One greedy Generate (EOS ignored); the ids streamed, the last message and the status."""
    request = pb.GenerateRequest(max_new_tokens=max_new_tokens, ignore_eos=True, **fields)
    request.sampling.temperature = 0.0
    if ids:
        request.token_ids.ids.extend(ids)
    out: list[int] = []
    last = None
    try:
        for message in replica.inference.Generate(request, timeout=60):
            out.extend(message.token_ids)
            last = message
    except grpc.RpcError as e:
        return Outcome(e.code().name, e.details() or "", out, last)
    return Outcome("OK", "", out, last)


def reference(ids: list[int], max_new_tokens: int) -> list[int]:
    """hgrn2-run's greedy continuation of `ids` (the CPU reference, one uninterrupted run)."""
    done = subprocess.run(
        [RUN, "--model", str(MODEL), "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens",
         str(max_new_tokens), "--temperature", "0", "--ignore-eos", "--print-ids"],
        capture_output=True, text=True, check=True)
    return [int(x) for x in done.stdout.strip().split(",") if x]


def session_info(replica: Replica, session_id: str) -> spb.SessionInfo | None:
    try:
        return replica.sessions.GetSession(spb.GetSessionRequest(session_id=session_id),
                                           timeout=30)
    except grpc.RpcError:
        return None


# --- the shared stores -------------------------------------------------------------------------

class SharedStore:
    """Replicas' flags for one shared store and the means to hold every save back."""

    name = ""

    def args(self) -> list[str]:
        raise NotImplementedError

    def hold_saves(self) -> None:
        raise NotImplementedError

    def release_saves(self) -> None:
        raise NotImplementedError


class RedisStore(SharedStore):
    name = "redis"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def args(self) -> list[str]:
        return ["--session-store", "memory,redis", "--redis-url", self.redis.url]

    def hold_saves(self) -> None:
        # Writes wait (scripts included), reads go on: every replica can still load.
        assert self.redis.cli("CLIENT", "PAUSE", "30000", "WRITE") == "OK"

    def release_saves(self) -> None:
        assert self.redis.cli("CLIENT", "UNPAUSE") == "OK"


class DirStore(SharedStore):
    name = "dir"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock_fd = -1

    def args(self) -> list[str]:
        return ["--session-store", "memory,dir", "--session-dir", str(self.folder)]

    def hold_saves(self) -> None:
        # The store's lock file: an fcntl lock over all of it conflicts with every replica's
        # lock on a session's byte, so each save waits here with its snapshot written.
        import fcntl
        self.lock_fd = os.open(self.folder / ".locks", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(self.lock_fd, fcntl.LOCK_EX)

    def release_saves(self) -> None:
        os.close(self.lock_fd)  # releases the lock
        self.lock_fd = -1


# --- scenarios ---------------------------------------------------------------------------------

def ping_pong(store: SharedStore, replicas: list[Replica], hops: int, tokens: int) -> None:
    """A conversation continued on each replica in turn equals one uninterrupted generation."""
    sid = f"pingpong-{len(replicas)}"
    got: list[int] = []
    for hop in range(hops):
        replica = replicas[hop % len(replicas)]
        fields = {"save_session_as": sid}
        if hop > 0:
            fields["session_id"] = sid
        outcome = generate(replica, PROMPT if hop == 0 else [], tokens, **fields)
        if not check(f"{store.name} x{len(replicas)}: hop {hop} on replica {hop % len(replicas)}"
                     f" ({outcome.code} {outcome.details})", outcome.ok):
            return
        got.extend(outcome.ids)
    want = reference(PROMPT, hops * tokens)
    check(f"{store.name} x{len(replicas)}: {hops} hops of {tokens} tokens across the replicas "
          f"equal one uninterrupted run of hgrn2-run (got {got}, want {want})", got == want)
    info = session_info(replicas[0], sid)
    check(f"{store.name} x{len(replicas)}: the session holds every token "
          f"({info.num_tokens if info else None})",
          info is not None and info.num_tokens == len(PROMPT) + hops * tokens)


def race(store: SharedStore, replicas: list[Replica], rounds: int) -> None:
    """N clients on N replicas continue one session from the same revision: one wins a round."""
    n = len(replicas)
    sid = f"race-{n}"
    seed = generate(replicas[0], PROMPT, 3, save_session_as=sid)
    if not check(f"{store.name} x{n}: the raced session is saved", seed.ok):
        return
    history = PROMPT + seed.ids
    for round_ in range(rounds):
        loads = [r.metric("hgrn2_session_loads_total") for r in replicas]
        outcomes: list[Outcome | None] = [None] * n
        prompts = [[100 + 10 * round_ + i] for i in range(n)]

        def client(i: int) -> None:
            outcomes[i] = generate(replicas[i], prompts[i], 4, session_id=sid,
                                   save_session_as=sid)

        store.hold_saves()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        try:
            for t in threads:
                t.start()
            everyone_read = wait_for(
                lambda: all(r.metric("hgrn2_session_loads_total") > before
                            for r, before in zip(replicas, loads)), 20,
                "every replica to read the session")
        finally:
            store.release_saves()
        for t in threads:
            t.join()
        check(f"{store.name} x{n} round {round_}: every replica read the session before any "
              "saved", everyone_read)
        codes = [o.code for o in outcomes]
        winners = [i for i, o in enumerate(outcomes) if o.ok]
        check(f"{store.name} x{n} round {round_}: exactly one save wins, the rest are ABORTED "
              f"({codes}; {[o.details for o in outcomes if not o.ok]})",
              len(winners) == 1 and codes.count("ABORTED") == n - 1)
        if len(winners) >= 1:
            w = winners[-1]
            history = history + prompts[w] + outcomes[w].ids
    info = session_info(replicas[0], sid)
    check(f"{store.name} x{n}: the session holds the winners' history "
          f"({info.num_tokens if info else None} tokens, want {len(history)})",
          info is not None and info.num_tokens == len(history))
    resumed = generate(replicas[-1], [7], 5, session_id=sid)
    want = reference(history + [7], 5)
    check(f"{store.name} x{n}: and resumes exactly as that history ({resumed.ids}, want {want})",
          resumed.ok and resumed.ids == want)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="redis,dir")
    parser.add_argument("--replicas", default="2,4")
    args = parser.parse_args()
    if not SERVER or not RUN or not MODEL.is_dir():
        print("skipping: HGRN2_SERVER, HGRN2_RUN and HGRN2_TEST_DATA_DIR are needed")
        return 77
    if shutil.which("redis-server") is None and "redis" in args.stores:
        print("skipping: redis-server is not installed (scripts/install-deps installs it)")
        return 77
    scratch = Path(tempfile.mkdtemp(prefix="hgrn2-replicas-"))
    started = time.monotonic()
    try:
        for store_name in args.stores.split(","):
            for count in map(int, args.replicas.split(",")):
                redis = None
                if store_name == "redis":
                    redis = Redis(scratch / f"redis-{count}")
                    store: SharedStore = RedisStore(redis)
                else:
                    store = DirStore(scratch / f"sessions-{count}")
                replicas: list[Replica] = []
                try:
                    for i in range(count):
                        replicas.append(Replica(scratch / f"{store_name}-{count}-{i}.log",
                                                store.args()))
                    ping_pong(store, replicas, hops=2 * count + 1, tokens=4)
                    race(store, replicas, rounds=2)
                finally:
                    for r in replicas:
                        r.stop()
                    if redis is not None:
                        redis.kill()
    finally:
        if failures:
            print(f"logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{failures} failed ({time.monotonic() - started:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
