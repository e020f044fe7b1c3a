"""The demo: embed examples/corpus with the default stack, then show the nearest neighbours of a query.

    bash scripts/demo.sh ["a query"]

The first run embeds all 320 documents; a second run finds every unit committed and does nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.run import run  # noqa: E402

QUERY = "a politician who lies for money"


def main() -> int:
    query = sys.argv[1] if len(sys.argv) > 1 else QUERY
    config = load_config(str(ROOT / "examples" / "demo.yaml"),
                         [f"input.path={ROOT / 'examples' / 'corpus'}", f"output.path={ROOT / 'out' / 'demo'}"])
    try:
        summary = run(config)
    except UserError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    if not summary.ok:
        return 1

    table = ds.dataset(config.output.path, format="parquet").to_table(columns=["id", "text", "vector"])
    ids = table.column("id").to_pylist()
    texts = dict(zip(ids, table.column("text").to_pylist()))
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(len(ids), -1)

    from actors.embedder import TextEmbedder

    embedder = TextEmbedder(config.specs, config.token_pooling)
    query_vector, _ = embedder.embed_documents([query])
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = normed @ (query_vector[0] / np.linalg.norm(query_vector[0]))
    print(f"\n{len(ids)} document vectors of dim {vectors.shape[1]} in {config.output.path}/data/")
    print(f"nearest neighbours of {query!r}:")
    for rank, index in enumerate(np.argsort(-scores)[:5], 1):
        snippet = texts.get(ids[index], "")[:110]
        print(f"  {rank}. {scores[index]:.3f}  {ids[index]:<28} {snippet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
