"""The recipes of the classic "BERT word embeddings" tutorial, with TransformerWordEmbeddings.

    python examples/bert_recipes.py [--model default]

On the packaged MiniLM (any local or hub BERT-style model works with ``--model``):

- word vectors as the sum of the last four layers (``layer_combine="sum"``) and as their
  concatenation (``layer_combine="concat"``: four times the hidden size);
- a sentence vector as the mean of the second-to-last layer's word vectors (``layers="-2"``
  with mean pooling);
- "bank" in "bank vault", "bank robber" and "river bank": the two money senses are closer to each
  other than the money sense is to the river sense, which a static word vector cannot show.

The tutorial reads WordPieces and averages all of them (``[CLS]`` and ``[SEP]`` included) for the
sentence vector; here a word's pieces are pooled first (``subtoken_pooling``), so each word
counts once. ``main()`` prints the shapes and similarities and returns them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from actors.stack import DocumentPoolEmbeddings, TransformerWordEmbeddings  # noqa: E402
from actors.text import tokenize  # noqa: E402

TEXT = "After stealing money from the bank vault, the bank robber was seen fishing on the Mississippi river bank."


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="transformer: 'default', a folder or a hub name")
    parser.add_argument("--text", default=TEXT)
    args = parser.parse_args(argv)

    tokens = tokenize(args.text)
    # Word vectors: the last four layers summed, or concatenated (last layer first).
    summed = TransformerWordEmbeddings(args.model, layers="-1,-2,-3,-4", layer_combine="sum")
    concat = TransformerWordEmbeddings(args.model, layers="-1,-2,-3,-4", layer_combine="concat")
    (sum_vectors,) = summed.embed([tokens])
    (concat_vectors,) = concat.embed([tokens])
    print(f"{len(tokens)} words; sum of last four layers: {tuple(sum_vectors.shape)}, "
          f"concatenation: {tuple(concat_vectors.shape)}")

    # Sentence vector: the mean over the words of the second-to-last layer.
    second_to_last = TransformerWordEmbeddings(args.model, layers="-2", subtoken_pooling="mean")
    (sentence_vector,) = DocumentPoolEmbeddings(second_to_last, pooling="mean").embed([tokens])
    print(f"sentence vector (mean of layer -2): {tuple(sentence_vector.shape)}")

    # "bank" in three contexts, compared by cosine similarity of the summed vectors.
    banks = [i for i, token in enumerate(tokens) if token.lower() == "bank"]
    if len(banks) != 3:
        raise SystemExit(f"the text needs three 'bank's (vault, robber, river), found {len(banks)}")
    vault, robber, river = banks
    results: dict[str, Any] = {
        "tokens": tokens,
        "bank_positions": banks,
        "sum_shape": tuple(sum_vectors.shape),
        "concat_shape": tuple(concat_vectors.shape),
        "sentence_shape": tuple(sentence_vector.shape),
        "hidden_size": summed.hidden_size,
    }
    for name, vectors in (("sum", sum_vectors), ("concat", concat_vectors)):
        same = cosine(vectors[robber], vectors[vault])
        different = cosine(vectors[robber], vectors[river])
        results[f"{name}_same_sense"] = same
        results[f"{name}_different_sense"] = different
        print(f"[{name}] 'bank robber' vs 'bank vault' (same sense): {same:.3f}; "
              f"'bank robber' vs 'river bank' (different sense): {different:.3f}")
    results["similarity_same_sense"] = results["sum_same_sense"]
    results["similarity_different_sense"] = results["sum_different_sense"]
    return results


if __name__ == "__main__":
    main()
