"""The padded-token budget per forward pass (``resources.max_batch_tokens``), swept in-process.

``python -m bench.budgets [--docs N] [--budgets 1024,2048,8192] [--precision auto|bfloat16]``
embeds the same seeded documents with the default stack (``sentence_transformer``) and the
transformer stack at each budget, interleaved, best of 3, next to ``SentenceTransformer.encode``
on the short documents; it prints docs/s and the ratio to the first budget. It is how the CPU
default (``actors.stack.batching.CPU_MAX_BATCH_TOKENS``) was chosen; run it to choose on other
hardware (set the result with ``--set resources.max_batch_tokens=N``).
"""
from __future__ import annotations

import argparse

from bench.corpus import make_documents, make_short_documents
from bench.run import interleaved, model_path
from bench.runs import TRANSFORMER_POOLING, TRANSFORMER_STACK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1200)
    parser.add_argument("--budgets", default="8192,4096,2048,1024")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from actors.embedder import TextEmbedder

    budgets = [int(b) for b in args.budgets.split(",")]
    corpora = {"short documents (<= 256 pieces)": [d["text"] for d in make_short_documents(args.docs, seed=0)],
               "mixed documents (bench corpus)": [d["text"] for d in make_documents(args.docs, seed=0)]}
    stacks = {"sentence_transformer": ([{"sentence_transformer": {}}], None),
              "transformer": (TRANSFORMER_STACK, TRANSFORMER_POOLING)}
    st = SentenceTransformer(model_path(), device="cpu")
    for corpus, texts in corpora.items():
        for kind, (stack, pooling) in stacks.items():
            embedders = {b: TextEmbedder(stack, pooling, max_batch_tokens=b, precision=args.precision) for b in budgets}
            fns = {f"budget {b}": (lambda e=e: e.embed_documents(texts)) for b, e in embedders.items()}
            for embedder in embedders.values():
                embedder.embed_documents(texts[:16])
            if kind == "sentence_transformer":
                fns["SentenceTransformer.encode"] = lambda: st.encode(texts, batch_size=32)
            times = interleaved(fns, 3)
            base = min(times[f"budget {budgets[0]}"])
            print(f"{corpus}, {kind} stack, precision {args.precision}, {len(texts)} docs")
            for name, values in times.items():
                print(f"  {name:28s} {len(texts) / min(values):8.1f} docs/s  {base / min(values):.3f}x")


if __name__ == "__main__":
    main()
