"""The bench corpus: real English (The Devil's Dictionary in examples/corpus), seeded, short and long mixed.

Every document is made from the demo corpus's entries, so the text is real and the vocabulary
realistic; a seed fixes the mix, so two runs (and two machines) measure the same documents:

- 50% short: one sentence of an entry (a query-sized text, ~10-40 words);
- 35% medium: one whole entry (a definition, ~20-300 words);
- 15% long: 3 to 6 consecutive entries joined (~300-1,500 words: several windows for a
  512-piece encoder, and far past SentenceTransformer's 256-piece truncation).

``make_short_documents`` makes the bench's many-documents job instead: only texts that the
packaged MiniLM's tokenizer cuts into at most 256 pieces (nothing truncated, one window), drawn,
seeded, from the demo corpus's sentences, pairs of consecutive sentences and whole entries.
"""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_CORPUS = ROOT / "examples" / "corpus"


def demo_documents() -> list[dict]:
    """The demo corpus's 320 entries (``id``, ``title``, ``text``) in a fixed order (by file name, then line)."""
    docs = []
    for path in sorted(DEMO_CORPUS.glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            docs.extend(json.loads(line) for line in handle if line.strip())
    return docs


def demo_texts() -> list[str]:
    """The demo corpus's 320 entry texts, in ``demo_documents`` order."""
    return [doc["text"] for doc in demo_documents()]


def make_documents(n: int, seed: int = 0, mix: tuple[float, float, float] = (0.50, 0.35, 0.15)) -> list[dict]:
    """``n`` documents ``{"id", "text"}``, seeded; ``mix`` = shares of (short, medium, long)."""
    from actors.text import split_sentences

    entries = demo_texts()
    sentences = [s for text in entries for s in split_sentences(text) if len(s.split()) >= 4]
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        draw = rng.random()
        if draw < mix[0]:
            text, kind = rng.choice(sentences), "short"
        elif draw < mix[0] + mix[1]:
            text, kind = rng.choice(entries), "medium"
        else:
            start, count = rng.randrange(len(entries)), rng.randint(3, 6)
            text = " ".join(entries[(start + k) % len(entries)] for k in range(count))
            kind = "long"
        docs.append({"id": f"bench:{i:07d}", "text": text, "kind": kind})
    return docs


def make_short_documents(n: int, seed: int = 0, max_pieces: int = 256) -> list[dict]:
    """``n`` documents ``{"id", "text", "kind", "pieces"}``, seeded, each at most ``max_pieces`` WordPieces.

    Pieces are counted by the packaged MiniLM's tokenizer with ``[CLS]`` and ``[SEP]`` (what
    SentenceTransformer and the ``sentence_transformer`` stack feed the encoder), so neither side
    truncates any of them. The pool: every sentence of 4 words or more (``short``), every pair of
    consecutive sentences of an entry (``pair``) and every whole entry (``entry``) that fits;
    documents are drawn from it 50% / 30% / 20%. Ids are ``short:<n>``.
    """
    from transformers import AutoTokenizer

    from actors.stack.registry import resolve_transformer
    from actors.text import split_sentences

    tokenizer = AutoTokenizer.from_pretrained(resolve_transformer("default").path)
    entries = demo_texts()
    per_entry = [[s for s in split_sentences(text) if len(s.split()) >= 4] for text in entries]
    pools: dict[str, list[str]] = {
        "short": [s for sentences in per_entry for s in sentences],
        "pair": [f"{a} {b}" for sentences in per_entry for a, b in zip(sentences, sentences[1:])],
        "entry": list(entries),
    }
    sized: dict[str, list[tuple[str, int]]] = {}
    for kind, texts in pools.items():
        counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        sized[kind] = [(text, count) for text, count in zip(texts, counts) if count <= max_pieces]
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        draw = rng.random()
        kind = "short" if draw < 0.5 else "pair" if draw < 0.8 else "entry"
        text, pieces = rng.choice(sized[kind] or sized["short"])
        docs.append({"id": f"short:{i:07d}", "text": text, "kind": kind, "pieces": pieces})
    return docs


def write_shards(docs: list[dict], folder: Path, shards: int) -> list[Path]:
    """Spread ``docs`` over ``shards`` JSONL files (contiguous slices); returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(docs) // shards)
    paths = []
    for index in range(shards):
        chunk = docs[index * per_shard:(index + 1) * per_shard]
        if not chunk:
            break
        path = folder / f"part-{index:04d}.jsonl"
        path.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in chunk), encoding="utf-8")
        paths.append(path)
    return paths


def sentences_of(docs: list[dict], n: int, seed: int = 1) -> list[list[str]]:
    """``n`` tokenized sentences drawn (seeded) from ``docs``: the token-level benches' input."""
    from actors.text import split_sentences, tokenize

    pool = [tokenize(s) for d in docs for s in split_sentences(d["text"])]
    pool = [tokens for tokens in pool if tokens]
    rng = random.Random(seed)
    return [rng.choice(pool) for _ in range(n)]
