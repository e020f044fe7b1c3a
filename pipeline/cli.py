"""``corpus-embed``: run, status, embed, config, index build/info, search. Each command has ``--help``;
``corpus-embed config`` is the reference of every config field.

Exit codes: 0 success; 1 the run failed (units failed, or an error; committed work is kept and a
rerun resumes); 2 a mistake found before any work (bad config, input, model or output path; an
output another run holds; a refresh that would prune too much): one line, no traceback, nothing
changed. SIGTERM and Ctrl-C stop a run cleanly (committed units kept) with exit 130.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any, Sequence

from pipeline.config import CONFIG_HELP, StorageConfig, load_config
from pipeline.errors import UserError, one_line


def _stop_on_sigterm() -> None:
    """SIGTERM (``kill``, a scheduler) stops a run as Ctrl-C does: cleanly, committed units kept."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _confirm_overwrite(plan: Any, assume_yes: bool) -> None:
    """``--overwrite`` deletes committed work: ask on a terminal, require ``--yes`` elsewhere."""
    from pipeline.plan import OverwriteRefused

    count = len(plan.committed)
    if not plan.options.overwrite or not count or assume_yes:
        return
    question = f"--overwrite deletes {count} committed unit(s) of {plan.output.url}"
    if sys.stdin.isatty():
        answer = input(f"{question}. Type 'yes' to go on: ").strip().lower()
        if answer == "yes":
            return
    raise OverwriteRefused(f"{question}; nothing was changed. Pass --yes to confirm")


def _run(args: argparse.Namespace) -> int:
    from pipeline.plan import RunOptions
    from pipeline.run import run

    config = load_config(args.config, args.set)
    options = RunOptions(overwrite=args.overwrite, prune=not args.no_prune, max_reject_ratio=args.max_reject_ratio,
                         max_prune_ratio=args.max_prune_ratio)
    _stop_on_sigterm()
    summary = run(config, options, progress=not args.quiet, verbose=args.verbose,
                  on_plan=lambda plan: _confirm_overwrite(plan, args.yes))
    print("\n".join(summary.lines()))
    if summary.error and summary.error.startswith("interrupted"):
        return 130
    return 0 if summary.ok else 1


def _status(args: argparse.Namespace) -> int:
    from pipeline.status import duplicate_ids, format_status, output_status

    storage = StorageConfig(endpoint_url=args.endpoint_url)
    status = output_status(args.output, storage)
    if args.check:
        status["check"] = duplicate_ids(args.output, storage)
    if args.json:
        print(json.dumps(status, indent=1, default=str))
        return 0
    print(format_status(status))
    if args.check:
        check = status["check"]
        line = f"  check: {check['rows']:,} rows, {check['duplicate_ids']:,} ids occur more than once"
        if check["examples"]:
            line += ", e.g. " + ", ".join(f"{item['id']!r} x{item['count']}" for item in check["examples"])
        print(line)
    return 0


def _embed(args: argparse.Namespace) -> int:
    from actors.embedder import TextEmbedder
    from pipeline.config import parse_config

    if args.config:
        config = load_config(args.config, args.set)
    else:
        config = parse_config({"input": {"path": "-"}, "output": {"path": "-"}}, args.set)
    embedder = TextEmbedder(config.specs, config.token_pooling, precision=config.resources.precision)
    if embedder.document_level:
        matrix, counts = embedder.embed_documents([args.text])
        print(f"stack {embedder.fingerprint()}: {config.specs[0].kind}, dim {embedder.dim}, {counts[0]} model tokens")
        print("document vector: head " + " ".join(f"{value:+.4f}" for value in matrix[0][: args.head]))
        return 0
    result = embedder.embed_sentences([args.text], keep_tokens=True)[0]
    print(f"stack {embedder.fingerprint()}: token dim {embedder.token_dim}, {embedder.pooling}-pooled dim {embedder.dim}")
    for sentence, tokens, vectors in zip(result.sentences, result.tokens, result.vectors):
        print(f"sentence: {sentence!r} → {vectors.shape[0]} tokens × {vectors.shape[1]}")
        for token, vector in zip(tokens, vectors):
            head = " ".join(f"{value:+.4f}" for value in vector[: args.head])
            print(f"  {token!r:>20} [{head} ...]")
    document, _ = embedder.embed_documents([args.text])
    print(f"document vector ({embedder.pooling}): shape {tuple(document[0].shape)}; head "
          + " ".join(f"{value:+.4f}" for value in document[0][: args.head]))
    return 0


def _config(args: argparse.Namespace) -> int:
    """The config reference, generated from the model (no Ray, no torch): it cannot go stale."""
    from pipeline import config_docs

    if args.json_schema:
        print(config_docs.json_schema_text())
    elif args.example:
        print(config_docs.example(), end="")
    else:
        print(config_docs.reference())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corpus-embed", description="Embed whole corpora with stacked contextual embeddings, resumably, on Ray.",
                                     epilog=f"Config files: {CONFIG_HELP}.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="embed, resume or refresh: does only what is not committed",
                              epilog=CONFIG_HELP)
    run.add_argument("config", help="YAML/JSON config: local path or s3://, gs:// URL")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. output.path=s3://b/out (fields: corpus-embed config)")
    run.add_argument("--overwrite", action="store_true", help="delete the existing output first (also when its stack differs); asks first")
    run.add_argument("--yes", action="store_true", help="confirm --overwrite without asking (for scripts)")
    run.add_argument("--no-prune", action="store_true", help="keep outputs of shards no longer in the input")
    run.add_argument("--max-reject-ratio", type=float, default=None,
                     help="a unit with a larger share of rejected rows is not committed (config: max_reject_ratio, default 0.05)")
    run.add_argument("--max-prune-ratio", type=float, default=None,
                     help="refuse a refresh that would remove a larger share of the committed units (config: max_prune_ratio, default 0.5)")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument("--verbose", action="store_true", help="Ray's own log lines and per-operator progress bars")
    run.set_defaults(func=_run)

    status = commands.add_parser("status", help="units done / pending / failed, the running run, rows, rejects, past runs")
    status.add_argument("output")
    status.add_argument("--endpoint-url", default=None, help="object-storage endpoint (credentials from the environment)")
    status.add_argument("--check", action="store_true", help="also read every id and report ids that occur more than once")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    embed = commands.add_parser("embed", help="embed one text in-process and print the vectors' shape and head",
                                epilog=CONFIG_HELP)
    embed.add_argument("text")
    embed.add_argument("--config", default=None, help="config whose stack to use (default: the packaged MiniLM)")
    embed.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. stack.0.sentence_transformer.prompt_name=query")
    embed.add_argument("--head", type=int, default=6, help="values shown per vector")
    embed.set_defaults(func=_embed)

    config = commands.add_parser("config", help="every config field: dotted path, type, default and meaning",
                                 description="The job config reference, generated from the config model itself.")
    shown = config.add_mutually_exclusive_group()
    shown.add_argument("--json-schema", action="store_true", help="print the JSON Schema of a config file instead")
    shown.add_argument("--example", action="store_true",
                       help="print a commented example config (every field at its default) instead")
    config.set_defaults(func=_config)

    from pipeline.index.commands import add_index_commands

    add_index_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:      # `corpus-embed config | head`: the reader has what it wanted
        sys.stderr.close()
        return 0
    except UserError as error:
        print(f"corpus-embed: {one_line(error, 4000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("corpus-embed: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line for people; the traceback with --verbose
        if getattr(args, "verbose", False):
            raise
        print(f"corpus-embed: {type(error).__name__}: {one_line(error, 4000)} (run with --verbose for the "
              f"traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
