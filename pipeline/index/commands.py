"""The ``index build``, ``index info`` and ``search`` subcommands (shared with ``jobs.build_index``).

Exit codes follow ``corpus-embed``'s: 0 success, 1 the work failed, 2 bad usage or an index/output
that cannot be used as asked (nothing was changed). The index's errors are ``UserError``s: the
caller (``pipeline.cli.main``, ``jobs.build_index``) prints them as one line and exits 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeline.config import StorageConfig


def _storage(args: argparse.Namespace) -> StorageConfig | None:
    return StorageConfig(endpoint_url=args.endpoint_url) if args.endpoint_url else None


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.index.layout import KINDS

    parser.add_argument("output", help="the corpus-embed output to index (local path or s3://, gs:// URL)")
    parser.add_argument("index", help="where the index lives (local path or s3://, gs:// URL); updated in place")
    parser.add_argument("--kind", choices=KINDS, default=None,
                        help="flat (exact), hnsw (default for a new index) or ivfpq (compressed); an existing index keeps its kind")
    parser.add_argument("--rebuild", action="store_true", help="ignore the existing index and build a new one in its place")
    parser.add_argument("--hnsw-m", type=int, default=None, help="hnsw: graph links per node (default 32)")
    parser.add_argument("--ef-construction", type=int, default=None, help="hnsw: build-time search width (default 200)")
    parser.add_argument("--ef-search", type=int, default=None, help="hnsw: default search width (default 128)")
    parser.add_argument("--nlist", type=int, default=None, help="ivfpq: inverted lists (default ~4*sqrt(n))")
    parser.add_argument("--nprobe", type=int, default=None, help="ivfpq: lists visited per search (default max(8, nlist/16))")
    parser.add_argument("--pq-m", type=int, default=None, help="ivfpq: bytes per vector, must divide dim (default dim/2)")
    parser.add_argument("--endpoint-url", default=None, help="object-storage endpoint (credentials from the environment)")
    parser.add_argument("--json", action="store_true", help="print the build summary as one JSON line")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run_build(args: argparse.Namespace) -> int:
    from pipeline.index.build import build_index

    params = {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction, "ef_search": args.ef_search,
              "nlist": args.nlist, "nprobe": args.nprobe, "pq_m": args.pq_m}
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    summary = build_index(args.output, args.index, args.kind, storage=_storage(args), params=params,
                          rebuild=args.rebuild, log=log)
    print(json.dumps(summary.to_dict(), sort_keys=True) if args.json else "\n".join(summary.lines()))
    return 0


def _info(args: argparse.Namespace) -> int:
    from pipeline.index.layout import require_meta
    from pipeline.storage import Folder, storage_errors

    with storage_errors(args.index, "index", _storage(args)):
        meta = require_meta(Folder(args.index, _storage(args)))
    if args.json:
        print(meta.to_json())
        return 0
    print(f"index {args.index}: {meta.kind}, {meta.count:,} vectors of dim {meta.dim} ({meta.granularity}, {meta.metric})")
    print(f"  stack {meta.stack_fingerprint}, pooling {meta.pooling or 'none (document-level stack)'}; built from {meta.output}")
    print(f"  {len(meta.units)} units indexed, generation {meta.generation}, file {meta.index_file}; "
          f"{meta.tombstoned:,} tombstoned labels")
    print(f"  settings: {json.dumps(meta.params, sort_keys=True)}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from pipeline.index.search import Searcher

    searcher = Searcher(args.index, _storage(args))
    hits = searcher.search(args.query, args.k, ef_search=args.ef_search, nprobe=args.nprobe)
    if args.json:
        for hit in hits:
            print(json.dumps(hit.to_dict(), ensure_ascii=False))
        return 0
    print(format_hits(hits, searcher.reader.meta.granularity))
    return 0


def format_hits(hits: list[Any], granularity: str) -> str:
    """rank, score, id (and sentence number and snippet for sentence outputs), one hit per line."""
    if not hits:
        return "no results (the index is empty)"
    width = max(len(str(hit.id)) for hit in hits)   # ids are strings or ints
    header = f"{'rank':>4}  {'score':>7}  {'id':<{width}}" + ("  sent  text" if granularity == "sentence" else "")
    lines = [header.rstrip()]
    for hit in hits:
        line = f"{hit.rank:>4}  {hit.score:>7.4f}  {str(hit.id):<{width}}"
        if hit.sentence is not None:
            line += f"  {hit.sentence:>4}"
        if hit.text:
            snippet = " ".join(hit.text.split())
            line += "  " + (snippet if len(snippet) <= 100 else snippet[:99] + "…")
        lines.append(line.rstrip())
    return "\n".join(lines)


def add_index_commands(commands: Any) -> None:
    """Register ``index build``, ``index info`` and ``search`` on corpus-embed's subparsers."""
    index = commands.add_parser("index", help="build or inspect a vector index over an output's vectors")
    index_commands = index.add_subparsers(dest="index_command", required=True)
    build = index_commands.add_parser("build", help="build the index, or update it with what was committed since")
    add_build_arguments(build)
    build.set_defaults(func=run_build)
    info = index_commands.add_parser("info", help="what an index holds: kind, count, dim, stack, units")
    info.add_argument("index")
    info.add_argument("--endpoint-url", default=None)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_info)

    search = commands.add_parser("search", help="embed a query with the index's stack and print the nearest rows")
    search.add_argument("index", help="an index built by `corpus-embed index build`")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    search.add_argument("--ef-search", type=int, default=None, help="hnsw: search width for this query")
    search.add_argument("--nprobe", type=int, default=None, help="ivfpq: lists visited for this query")
    search.add_argument("--endpoint-url", default=None, help="object-storage endpoint (credentials from the environment)")
    search.add_argument("--json", action="store_true", help="one JSON object per hit")
    search.set_defaults(func=_search)
