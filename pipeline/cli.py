"""``corpus-embed``: run, status, embed, index build/info, search. Each command has ``--help``.

Exit codes: 0 success; 1 the run failed (units failed, too many rejects, or an error; committed
work is kept and a rerun resumes); 2 bad usage or config (nothing was done).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from pipeline.config import ConfigError, StorageConfig, load_config


def _run(args: argparse.Namespace) -> int:
    from pipeline.ledger import OutputMismatchError
    from pipeline.run import run
    from pipeline.sources import InputError

    config = load_config(args.config, args.set)
    try:
        summary = run(config, overwrite=args.overwrite, prune=not args.no_prune,
                      max_reject_ratio=args.max_reject_ratio, progress=not args.quiet)
    except (OutputMismatchError, InputError) as error:
        print(f"corpus-embed: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 0 if summary.ok else 1


def _status(args: argparse.Namespace) -> int:
    from pipeline.status import format_status, output_status

    storage = StorageConfig(endpoint_url=args.endpoint_url)
    status = output_status(args.output, storage)
    print(json.dumps(status, indent=1) if args.json else format_status(status))
    return 0


def _embed(args: argparse.Namespace) -> int:
    from actors.embedder import TextEmbedder
    from pipeline.config import JobConfig, parse_config

    if args.config:
        config = load_config(args.config, args.set)
    else:
        config = parse_config({"input": {"path": "-"}, "output": {"path": "-"}}, args.set)
    assert isinstance(config, JobConfig)
    embedder = TextEmbedder(config.stack_spec(), config.pooling, precision=config.resources.precision)
    result = embedder.embed_sentences([args.text], keep_tokens=True)[0]
    print(f"stack {embedder.fingerprint()}: token dim {embedder.token_dim}, {config.pooling}-pooled dim {embedder.dim}")
    for sentence, tokens, vectors in zip(result.sentences, result.tokens, result.vectors):
        print(f"sentence: {sentence!r} → {vectors.shape[0]} tokens × {vectors.shape[1]}")
        for token, vector in zip(tokens, vectors):
            head = " ".join(f"{value:+.4f}" for value in vector[: args.head])
            print(f"  {token!r:>20} [{head} ...]")
    document, _ = embedder.embed_documents([args.text])
    print(f"document vector ({config.pooling}): shape {tuple(document[0].shape)}; head "
          + " ".join(f"{value:+.4f}" for value in document[0][: args.head]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corpus-embed", description="Embed whole corpora with stacked contextual embeddings, resumably, on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="embed, resume or refresh: does only what is not committed")
    run.add_argument("config", help="YAML/JSON config: local path or s3://, gs:// URL")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. output.path=s3://b/out")
    run.add_argument("--overwrite", action="store_true", help="delete the existing output first (also when its stack differs)")
    run.add_argument("--no-prune", action="store_true", help="keep outputs of shards no longer in the input")
    run.add_argument("--max-reject-ratio", type=float, default=None, help="fail the run above this share of rejected rows (config: max_reject_ratio, default 0.05)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.set_defaults(func=_run)

    status = commands.add_parser("status", help="units done / pending / failed, rows, rejects, past runs")
    status.add_argument("output")
    status.add_argument("--endpoint-url", default=None, help="object-storage endpoint (credentials from the environment)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    embed = commands.add_parser("embed", help="embed one text in-process and print the vectors' shape and head")
    embed.add_argument("text")
    embed.add_argument("--config", default=None, help="config whose stack to use (default: the packaged MiniLM)")
    embed.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    embed.add_argument("--head", type=int, default=6, help="values shown per vector")
    embed.set_defaults(func=_embed)

    from pipeline.index.commands import add_index_commands

    add_index_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as error:
        print(f"corpus-embed: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
