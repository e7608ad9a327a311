"""The `hgrn2` command: generate, chat, score, tokenize, detokenize, session, info, health."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format

from .client import Client, Session
from .errors import Hgrn2Error
from .types import Prompt, StreamChunk, StreamEnd

PROG = "hgrn2"


def _ids(text: str) -> list[int]:
    """Token ids from "1,2,3" (or spaces)."""
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of token ids: {text!r}") from None


def _bias(text: str) -> tuple[int, float]:
    """A logit bias from "ID=VALUE" (VALUE may be -inf)."""
    token, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(token), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ID=VALUE, got {text!r}") from None


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """--addr, --timeout, --api-key, --tls*; on subcommands too (defaults only at the top)."""
    default: Callable[[Any], Any] = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    parser.add_argument(
        "--addr",
        default=default(os.environ.get("HGRN2_ADDR", "localhost:50051")),
        help="server host:port (env HGRN2_ADDR; default localhost:50051)",
    )
    parser.add_argument("--timeout", type=float, default=default(None), help="seconds per call")
    parser.add_argument(
        "--api-key",
        default=default(os.environ.get("HGRN2_API_KEY")),
        help="sent as 'authorization: Bearer KEY' (env HGRN2_API_KEY)",
    )
    parser.add_argument("--tls", action="store_true", default=default(False), help="use TLS")
    parser.add_argument(
        "--tls-ca", default=default(None), help="use TLS, trusting the CA certificates in this PEM"
    )
    parser.add_argument(
        "--tls-cert", default=default(None), help="client certificate chain (PEM), mutual TLS"
    )
    parser.add_argument("--tls-key", default=default(None), help="private key (PEM) of --tls-cert")


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    """The SamplingOptions flags; left out, the server's defaults."""
    add = parser.add_argument
    add("--max-new-tokens", type=int)
    add("--temperature", type=float, help="0 = greedy")
    add("--top-k", type=int)
    add("--top-p", type=float)
    add("--min-p", type=float)
    add("--repetition-penalty", type=float)
    add("--presence-penalty", type=float)
    add("--frequency-penalty", type=float)
    add("--seed", type=int)
    add("--logit-bias", type=_bias, action="append", metavar="ID=VALUE")
    add("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    add("--stop-ids", type=_ids)
    add("--ignore-eos", action="store_true", default=None)
    add("--logprobs", type=int, help="alternatives per token")
    add("--priority", type=int)


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    """SamplingOptions keywords of the flags given."""
    names = (
        "max_new_tokens temperature top_k top_p min_p repetition_penalty presence_penalty "
        "frequency_penalty seed stop ignore_eos logprobs priority"
    ).split()
    options = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.logit_bias:
        options["logit_bias"] = dict(args.logit_bias)
    if args.stop_ids:
        options["stop_token_ids"] = args.stop_ids
    return options


def _prompt(args: argparse.Namespace) -> Prompt:
    if args.ids is not None:
        return list(args.ids)
    if args.prompt is None:
        raise SystemExit(f"{PROG}: give a prompt or --ids")
    return str(args.prompt)


def _generate(client: Client, args: argparse.Namespace) -> int:
    end: StreamEnd | None = None
    ids: list[int] = []
    wrote_text = False
    for event in client.stream(_prompt(args), **_sampling(args)):
        if isinstance(event, StreamChunk):
            ids.extend(event.token_ids)
            if not args.print_ids and event.text:
                sys.stdout.write(event.text)
                sys.stdout.flush()
                wrote_text = True
        else:
            end = event
    if wrote_text:
        print()
    elif ids:  # --print-ids, or a model without a tokenizer (no text): the ids
        print(",".join(map(str, ids)))
    if end is not None:
        print(
            f"[finish: {end.finish_reason}, {end.usage.prompt_tokens} prompt + "
            f"{end.usage.generated_tokens} generated tokens]",
            file=sys.stderr,
        )
    return 0


def _stream_reply(session: Session, text: str, options: dict[str, Any]) -> None:
    for event in session.stream(text, **options):
        if isinstance(event, StreamChunk):
            sys.stdout.write(event.text)
            sys.stdout.flush()
    print()


def _chat(client: Client, args: argparse.Namespace) -> int:
    session = client.session(args.session or f"chat-{uuid.uuid4().hex[:12]}")
    options = _sampling(args)
    print(f"[session {session.id}; /fork NAME, /save [FILE], /quit]", file=sys.stderr)
    for line in sys.stdin:
        line = line.rstrip("\n")
        command, _, rest = line.partition(" ")
        if command == "/quit":
            break
        if command == "/fork":
            if not rest.strip():
                print("[usage: /fork NAME]", file=sys.stderr)
                continue
            session = session.fork(rest.strip())
            print(f"[forked: now on session {session.id}]", file=sys.stderr)
        elif command == "/save":
            if rest.strip():
                written = session.export(rest.strip())
                print(f"[session {session.id} exported to {rest.strip()}: {written} bytes]", file=sys.stderr)
            else:
                info = session.info()
                print(
                    f"[session {session.id} saved: {info.num_tokens} tokens, revision {info.revision}]",
                    file=sys.stderr,
                )
        else:
            _stream_reply(session, line + args.separator, options)
    return 0


def _score(client: Client, args: argparse.Namespace) -> int:
    context: Prompt | None = args.context_ids if args.context_ids is not None else args.context
    continuation: Prompt | None = (
        args.continuation_ids if args.continuation_ids is not None else args.continuation
    )
    if continuation is None:
        raise SystemExit(f"{PROG}: give --continuation or --continuation-ids")
    result = client.score(context, continuation, top_logprobs=args.top_logprobs, session_id=args.session or "")
    for i, (token, logprob) in enumerate(zip(result.token_ids, result.token_logprobs)):
        print(f"{i} {token} {logprob:.6f}")
    print(f"total {result.total_logprob:.6f} greedy {'yes' if result.is_greedy else 'no'}")
    return 0


def _tokenize(client: Client, args: argparse.Namespace) -> int:
    result = client.tokenize(args.text, add_special_tokens=False if args.no_special else None)
    print(",".join(map(str, result.token_ids)))
    for token, piece in zip(result.token_ids, result.pieces):
        print(f"{token} {json.dumps(piece, ensure_ascii=False)}")
    return 0


def _detokenize(client: Client, args: argparse.Namespace) -> int:
    print(client.detokenize(args.ids))
    return 0


def _info(client: Client, args: argparse.Namespace) -> int:
    info = client.info()
    print(json_format.MessageToJson(info, indent=2) if args.json else str(info).rstrip())
    return 0


def _health(client: Client, args: argparse.Namespace) -> int:
    status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def _session(client: Client, args: argparse.Namespace) -> int:
    action = args.action
    if action == "list":
        for s in client.list_sessions():
            print(f"{s.session_id} {s.num_tokens} tokens {s.size_bytes} bytes revision {s.revision}")
    elif action == "export":
        written = client.export_session(args.id, args.file)
        print(f"exported {args.id} to {args.file}: {written} bytes", file=sys.stderr)
    elif action == "import":
        info = client.import_session(args.id, args.file)
        print(
            f"imported {info.session_id}: {info.num_tokens} tokens, {info.size_bytes} bytes, "
            f"revision {info.revision}"
        )
    elif action == "info":
        info = client.get_session(args.id)
        print(json.dumps(dataclasses.asdict(info), indent=2))
    else:
        client.delete_session(args.id)
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of `hgrn2` (common flags before or after the subcommand)."""
    top = argparse.ArgumentParser(prog=PROG, description="Client of hgrn2-server (gRPC hgrn2.v1).")
    _add_common(top, top=True)
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[Client, argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        _add_common(p, top=False)
        p.set_defaults(run=run)
        return p

    p = command("generate", _generate, "stream a generation to stdout")
    p.add_argument("prompt", nargs="?")
    p.add_argument("--ids", type=_ids, help="a token-id prompt instead of text")
    p.add_argument("--print-ids", action="store_true", help="print the generated ids, not text")
    _add_sampling(p)

    p = command("chat", _chat, "interactive conversation kept in a server session")
    p.add_argument("--session", help="session id (default: a new random one)")
    p.add_argument("--separator", default="\n", help="appended to each line sent (default newline)")
    _add_sampling(p)

    p = command("score", _score, "log-probabilities of a continuation")
    p.add_argument("--context")
    p.add_argument("--context-ids", type=_ids)
    p.add_argument("--continuation")
    p.add_argument("--continuation-ids", type=_ids)
    p.add_argument("--top-logprobs", type=int, default=0)
    p.add_argument("--session", help="condition on this saved session")

    p = command("tokenize", _tokenize, "text to token ids")
    p.add_argument("text")
    p.add_argument("--no-special", action="store_true", help="no BOS")

    p = command("detokenize", _detokenize, "token ids to text")
    p.add_argument("ids", type=_ids)

    p = command("info", _info, "the model and server")
    p.add_argument("--json", action="store_true")

    p = command("health", _health, "health status (exit 0 when SERVING)")
    p.add_argument("--service", default="")

    p = command("session", _session, "saved sessions: export, import, list, info, delete")
    actions = p.add_subparsers(dest="action", required=True)
    for name, needs_file in (("export", True), ("import", True), ("info", False), ("delete", False)):
        a = actions.add_parser(name)
        _add_common(a, top=False)
        a.add_argument("id")
        if needs_file:
            a.add_argument("file")
    _add_common(actions.add_parser("list"), top=False)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `hgrn2`; gRPC errors print one line and return 1."""
    args = parser().parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        print(f"{PROG}: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        client = Client(
            args.addr,
            api_key=args.api_key,
            tls=args.tls or None,
            timeout=args.timeout,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except ValueError as e:  # a certificate or key file that cannot be read
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    try:
        with client:
            return int(args.run(client, args))
    except Hgrn2Error as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
