"""Actor calls cut from length-sorted read blocks against calls in corpus order, in-process.

``python -m bench.length_order [--window 1024] [--reps 3]`` embeds seeded documents with the
default stack in calls of ``batch_rows`` documents, as an actor gets them: taken in corpus order,
and taken from windows of ``--window`` rows each put in order by
``pipeline.ray_pipeline.length_sorted`` (as a read block is), with one call over all of them
beside (what ``SentenceTransformer.encode`` sorts). Interleaved, best of ``--reps``; docs/s.
``python -m bench.levers length_sort`` measures the same lever through the pipeline.
"""
from __future__ import annotations

import argparse

import pyarrow as pa

from bench.corpus import make_documents, make_short_documents
from bench.run import interleaved
from pipeline.ray_pipeline import length_sorted

CASES = (("short documents (<= 256 pieces)", make_short_documents, 3000, 512),
         ("mixed documents (bench corpus)", make_documents, 1200, 100),
         ("mixed documents (bench corpus)", make_documents, 1200, 512))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    from actors.embedder import TextEmbedder
    from actors.stack.specs import default_stack

    embedder = TextEmbedder(default_stack())
    for corpus, make, docs, batch_rows in CASES:
        texts = [doc["text"] for doc in make(docs, seed=0)]
        window = args.window
        length_ordered = [text for start in range(0, len(texts), window)
                          for text in length_sorted(pa.table({"text": texts[start:start + window]}))
                          .column("text").to_pylist()]

        def calls(sequence: list[str]) -> None:
            for start in range(0, len(sequence), batch_rows):
                embedder.embed_documents(sequence[start:start + batch_rows])

        embedder.embed_documents(texts[:64])
        times = interleaved({"corpus order": lambda: calls(texts),
                             f"{window}-row windows by length": lambda: calls(length_ordered),
                             "one call over all": lambda: embedder.embed_documents(texts)}, args.reps)
        rates = {name: len(texts) / min(seconds) for name, seconds in times.items()}
        base = rates["corpus order"]
        print(f"{corpus}, {len(texts)} docs, calls of {batch_rows}:")
        for name, rate in rates.items():
            print(f"  {name:<32} {rate:7.1f} docs/s  {rate / base:.2f}x")


if __name__ == "__main__":
    main()
