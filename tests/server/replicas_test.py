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
  kill -9    clients keep saving their own sessions on two replicas; one replica is killed with
             a save held back mid-way (its snapshot written, waiting for the lock; or sent to a
             paused Redis) and others in flight: no snapshot is partial, the survivor serves on
             (its clients see no error), the dead replica's clients go on there, every
             acknowledged save is there (or the one after it, if it landed unacknowledged), and
             the replica restarted on the folder removes the dead one's temp files.
  redis restart (Redis with appendfsync always) the same clients while Redis is killed -9 and
             started again: session calls are UNAVAILABLE while it is down, plain generation goes
             on, saves work again once it is back without restarting a replica, and nothing
             acknowledged is lost.
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
             "cpu", "--metrics-port", str(free_port()), "--http-port", "0", *self.store_args],
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
        # Any labels (every series carries model_name).
        match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
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
        """kill -9; the channel stays open, so calls still made on it fail UNAVAILABLE."""
        self.process.kill()
        self.process.wait()
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
        check(f"{store.name} x{len(replicas)}: hop {hop} resumed revision {hop} and saved "
              f"revision {hop + 1} ({outcome.last.resumed_revision}, "
              f"{outcome.last.saved_revision})",
              outcome.last.resumed_revision == hop and outcome.last.saved_revision == hop + 1)
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
              f"({codes})", len(winners) == 1 and codes.count("ABORTED") == n - 1)
        revision = round_ + 1  # the seed's save was revision 1
        named = f"is at revision {revision + 1}, not revision {revision}"
        check(f"{store.name} x{n} round {round_}: each refusal names both revisions "
              f"({[o.details for o in outcomes if not o.ok][:1]})",
              all(named in o.details for o in outcomes if not o.ok))
        if len(winners) >= 1:
            w = winners[-1]
            history = history + prompts[w] + outcomes[w].ids
            check(f"{store.name} x{n} round {round_}: the winner saved revision {revision + 1}",
                  outcomes[w].last.saved_revision == revision + 1)
    info = session_info(replicas[0], sid)
    check(f"{store.name} x{n}: the session holds the winners' history "
          f"({info.num_tokens if info else None} tokens, want {len(history)})",
          info is not None and info.num_tokens == len(history))
    resumed = generate(replicas[-1], [7], 5, session_id=sid)
    want = reference(history + [7], 5)
    check(f"{store.name} x{n}: and resumes exactly as that history ({resumed.ids}, want {want})",
          resumed.ok and resumed.ids == want)


class Storm:
    """Clients saving their own sessions in a loop: thread t continues session storm-t on
    replicas[route[t]] (three tokens a turn), recording every acknowledged save."""

    def __init__(self, replicas: list[Replica], route: list[int]) -> None:
        self.replicas = replicas
        self.route = route
        self.dead: set[int] = set()  # replicas killed: their clients go to the next one
        self.lock = threading.Lock()
        self.acked = [dict(revision=0, tokens=0, history=[], doubt=False) for _ in route]
        self.acks = [0] * len(route)
        self.errors: list[tuple[int, int, str, str]] = []  # thread, replica, code, details
        self.go = threading.Event()
        self.go.set()
        self.busy = [False] * len(route)
        self.stopping = False
        self.threads = [threading.Thread(target=self.run, args=(t,)) for t in range(len(route))]
        for thread in self.threads:
            thread.start()

    def replica_of(self, t: int) -> int:
        r = self.route[t]
        while r in self.dead:
            r = (r + 1) % len(self.replicas)
        return r

    def run(self, t: int) -> None:
        sid = f"storm-{t}"
        turn = 0
        while not self.stopping:
            self.go.wait()
            if self.stopping:
                break
            with self.lock:
                self.busy[t] = True
                r = self.replica_of(t)
                entry = dict(self.acked[t])
            if entry["history"] is None:
                # This ledger lost the session's history (a save that failed may have landed):
                # start it over, as turn 0 does; saving an id not resumed replaces what is there.
                entry.update(revision=0, tokens=0, history=[])
            prompt = [(37 * t + 11 * turn) % 500 + 3]
            turn += 1
            fields = {"save_session_as": sid}
            if entry["revision"]:
                fields["session_id"] = sid
            outcome = generate(self.replicas[r], prompt, 3, **fields)
            with self.lock:
                self.busy[t] = False
                if outcome.ok:
                    # Resuming the last acknowledged revision: a failed save since did not
                    # land, and the history is still this ledger's.
                    known = (entry["history"] is not None and
                             outcome.last.resumed_revision == entry["revision"])
                    self.acked[t] = dict(
                        revision=outcome.last.saved_revision,
                        tokens=entry["tokens"] + len(prompt) + len(outcome.ids) if known else -1,
                        history=entry["history"] + prompt + outcome.ids if known else None,
                        doubt=False)
                    self.acks[t] += 1
                else:
                    # The save may have landed unacknowledged: what the next turn resumes is
                    # then not this ledger's history.
                    self.acked[t]["doubt"] = True
                    self.errors.append((t, r, outcome.code, outcome.details))

    def pause(self) -> None:
        self.go.clear()
        wait_for(lambda: not any(self.busy), 60, "the storm's requests to end")

    def stop(self) -> None:
        self.stopping = True
        self.go.set()
        for thread in self.threads:
            thread.join()

    def all_known(self) -> bool:
        """Every session's history is this ledger's (none resumed a save that failed)."""
        with self.lock:
            return all(entry["history"] is not None for entry in self.acked)

    def acks_on(self, replica: int) -> int:
        with self.lock:
            return sum(a for t, a in enumerate(self.acks) if self.route[t] == replica)


def verify_ledger(label: str, storm: Storm, replica: Replica, exact: int) -> None:
    """Every acknowledged save is there, or the one after it where a save failed after it (it may
    have landed); `exact` sessions of known history resume exactly."""
    lost, checked, wrong = [], 0, []
    for t, entry in enumerate(storm.acked):
        if not entry["revision"]:
            continue
        info = session_info(replica, f"storm-{t}")
        allowed = {entry["revision"], entry["revision"] + 1} if entry["doubt"] else {
            entry["revision"]}
        if info is None or info.revision not in allowed or (
                info.revision == entry["revision"] and entry["tokens"] >= 0 and
                info.num_tokens != entry["tokens"]):
            lost.append((t, entry["revision"], entry["tokens"],
                         (info.revision, info.num_tokens) if info else None))
            continue
        if checked < exact and info.revision == entry["revision"] and entry["history"]:
            resumed = generate(replica, [9], 3, session_id=f"storm-{t}")
            want = reference(entry["history"] + [9], 3)
            checked += 1
            if not resumed.ok or resumed.ids != want:
                wrong.append((t, resumed.code, resumed.details, resumed.ids, want))
    check(f"{label}: every acknowledged save is there ({sum(a > 0 for a in storm.acks)} "
          f"sessions, {sum(storm.acks)} saves; lost or wrong: {lost})", not lost)
    check(f"{label}: {checked} of them resume, each exactly as its history (wrong: {wrong}; "
          f"ledger: {[(e['revision'], e['tokens'], e['doubt']) for e in storm.acked]})",
          checked == exact and not wrong)


def every_session_loads(label: str, replica: Replica) -> None:
    """No partial snapshot: every session listed resumes (its checksums verified)."""
    listed = replica.sessions.ListSessions(spb.ListSessionsRequest(page_size=1000), timeout=30)
    bad = []
    for info in listed.sessions:
        outcome = generate(replica, [], 1, session_id=info.session_id)
        if not outcome.ok:
            bad.append((info.session_id, outcome.code, outcome.details))
    check(f"{label}: every one of the {len(listed.sessions)} sessions listed loads ({bad})",
          not bad and len(listed.sessions) > 0)


def kill9(store: SharedStore, scratch: Path) -> None:
    """A replica killed -9 during saves, one of them held mid-way."""
    label = f"{store.name} kill -9"
    replicas = [Replica(scratch / f"kill-{store.name}-{i}.log", store.args()) for i in range(2)]
    storm = None
    try:
        victim = "victim"
        check(f"{label}: the victim session is saved",
              generate(replicas[0], PROMPT, 2, save_session_as=victim).ok)
        storm = Storm(replicas, route=[0, 0, 1, 1])
        wait_for(lambda: storm.acks_on(0) >= 6 and storm.acks_on(1) >= 6, 60, "saves")
        storm.pause()
        before = session_info(replicas[0], victim)
        store.hold_saves()
        held = [None]
        thread = threading.Thread(target=lambda: held.__setitem__(
            0, generate(replicas[0], [5], 3, session_id=victim, save_session_as=victim)))
        thread.start()
        if isinstance(store, DirStore):
            pattern = f".{victim}~*.tmp"
            waiting = wait_for(lambda: any(store.folder.glob(f"t/{pattern}")), 30,
                               "the held save's temp file")
        else:
            waiting = wait_for(lambda: store.redis.cli("INFO", "clients").find(
                "blocked_clients:1") >= 0, 30, "the held save to reach Redis")
        check(f"{label}: a save on replica 0 is held mid-way", waiting)
        storm.go.set()  # more saves in flight, on both replicas
        wait_for(lambda: any(storm.busy[:2]), 10, "replica 0's clients to send")
        replicas[0].kill()
        with storm.lock:
            storm.dead.add(0)
        store.release_saves()
        thread.join()
        check(f"{label}: the held save was not acknowledged ({held[0].code})",
              held[0] is not None and not held[0].ok)
        after = session_info(replicas[1], victim)
        allowed = {before.revision, before.revision + 1}
        check(f"{label}: the held session is at its old revision or the next, whole "
              f"({before.revision} -> {after.revision if after else None})",
              after is not None and after.revision in allowed)
        if isinstance(store, DirStore):
            temps = list(store.folder.glob(f"t/.{victim}~*.tmp"))
            check(f"{label}: the dead replica's temp file is left ({len(temps)}), not a session",
                  len(temps) == 1 and after.revision == before.revision)
        base = storm.acks_on(0) + storm.acks_on(1)
        wait_for(lambda: storm.acks_on(0) + storm.acks_on(1) >= base + 8 and storm.all_known(),
                 60, "saves on the survivor")
        storm.pause()
        survivor_errors = [e for e in storm.errors if e[1] == 1]
        check(f"{label}: the survivor's clients saw no error ({survivor_errors[:3]})",
              not survivor_errors)
        moved = [storm.acks[t] for t in (0, 1)]
        check(f"{label}: the dead replica's clients went on on the survivor", all(moved))
        verify_ledger(label, storm, replicas[1], exact=2)
        every_session_loads(label, replicas[1])
        # The replica comes back on the same store: it removes the temp file its dead
        # predecessor left (same host, its pid gone) and serves the sessions saved meanwhile.
        replicas[0] = Replica(scratch / f"kill-{store.name}-0-again.log", store.args())
        if isinstance(store, DirStore):
            check(f"{label}: the restarted replica removed the dead one's temp file",
                  not list(store.folder.glob(f"t/.{victim}~*.tmp")))
        resumed = generate(replicas[0], [], 1, session_id="storm-2")
        check(f"{label}: the restarted replica resumes a session saved by the survivor "
              f"({resumed.code})", resumed.ok)
    finally:
        if storm is not None:
            storm.stop()
        for r in replicas:
            if r.process.poll() is None:
                r.stop()


def redis_restart(scratch: Path) -> None:
    """Redis (appendfsync always) killed -9 and started again under saving clients."""
    label = "redis restart"
    redis = Redis(scratch / "redis-restart", persistent=True)
    store = RedisStore(redis)
    replicas = [Replica(scratch / f"restart-{i}.log", store.args()) for i in range(2)]
    storm = None
    try:
        storm = Storm(replicas, route=[0, 0, 1, 1])
        wait_for(lambda: storm.acks_on(0) >= 5 and storm.acks_on(1) >= 5, 60, "saves")
        redis.kill()
        down = generate(replicas[0], [5], 2, save_session_as="while-down")
        check(f"{label}: a save while Redis is down is UNAVAILABLE naming it ({down.details})",
              down.code == "UNAVAILABLE" and f"127.0.0.1:{redis.port}" in down.details)
        resume = generate(replicas[1], [5], 2, session_id="storm-0")
        check(f"{label}: a resume too ({resume.code})", resume.code == "UNAVAILABLE")
        plain = generate(replicas[1], [5, 6], 2)
        check(f"{label}: generation without sessions goes on ({plain.code})", plain.ok)
        storm.pause()
        failures_while_down = len(storm.errors)
        redis.start()
        acks = list(storm.acks)
        storm.go.set()
        # A save in flight when Redis was killed may have landed unacknowledged (written and
        # fsynced, the reply never sent): its client starts the session over on its next turn,
        # so wait until every history is known again.
        recovered = wait_for(
            lambda: all(a > b for a, b in zip(storm.acks, acks)) and storm.all_known(), 60,
            "every client to save again")
        storm.pause()
        check(f"{label}: every client saves again, no replica restarted "
              f"({failures_while_down} calls failed while Redis was down)", recovered)
        codes = {e[2] for e in storm.errors}
        check(f"{label}: the failures were UNAVAILABLE ({codes}: "
              f"{[e for e in storm.errors if e[2] != 'UNAVAILABLE'][:3]})",
              codes <= {"UNAVAILABLE"})
        verify_ledger(label, storm, replicas[0], exact=2)
        every_session_loads(label, replicas[1])
    finally:
        if storm is not None:
            storm.stop()
        for r in replicas:
            r.stop()
        redis.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="redis,dir")
    parser.add_argument("--replicas", default="2,4")
    parser.add_argument("--scenarios", default="ping-pong,race,kill,restart")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
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
                    if "ping-pong" in scenarios:
                        ping_pong(store, replicas, hops=2 * count + 1, tokens=4)
                    if "race" in scenarios:
                        race(store, replicas, rounds=2)
                finally:
                    for r in replicas:
                        r.stop()
                if "kill" in scenarios and count == 2:
                    kill9(store, scratch)
                if redis is not None:
                    redis.kill()
            if store_name == "redis" and "restart" in scenarios:
                redis_restart(scratch)
    finally:
        if failures:
            print(f"logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{failures} failed ({time.monotonic() - started:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
