"""Models the benches make themselves, with random weights: nothing is downloaded.

- ``make_encoder_folder``: a BERT encoder (``transformers.BertConfig()``: BERT-base's shape, or a
  small one for smoke runs) saved with ``save_pretrained`` beside a WordPiece tokenizer built from
  the packaged MiniLM's tokenizer files (30,522 pieces, like BERT-base's), plus the
  sentence-transformers files (``modules.json``, ``sentence_bert_config.json``, a mean
  ``Pooling``): one folder that ``TransformerWordEmbeddings``, the ``sentence_transformer`` stack
  kind and ``SentenceTransformer`` all load.
- ``make_char_lm``: a Flair character LM file (``LanguageModel.save``'s layout: a pickled dict with
  a ``flair.data.Dictionary``) written without flair, which ``FlairEmbeddings`` loads.
- ``exact_length_texts``: texts that the tokenizer cuts into exactly ``length`` pieces (special
  tokens included), so that a forward pass's work is known to the FLOP.
"""
from __future__ import annotations

import json
import random
import sys
import types
from pathlib import Path
from typing import Any

# BERT-base is transformers' BertConfig() as it is; the smoke shape keeps every code path at a
# fraction of the cost (CPU-only machines, tests).
ENCODER_SHAPES: dict[str, dict[str, int]] = {
    "base": {},
    "tiny": {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 1024},
}
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def minilm_path() -> str:
    from actors.stack.registry import resolve_transformer

    return resolve_transformer("default").path


def make_encoder_folder(folder: Path, shape: str = "base", max_seq_length: int = 512, seed: int = 0) -> dict[str, Any]:
    """Write a randomly initialised BERT of ``ENCODER_SHAPES[shape]`` to ``folder``; returns its config."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig(**ENCODER_SHAPES[shape])
    torch.manual_seed(seed)
    model = BertModel(config).eval()   # with its pooler, as every loader expects (unused here)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    if len(tokenizer) != config.vocab_size:
        raise ValueError(f"the packaged tokenizer has {len(tokenizer)} pieces, BertConfig {config.vocab_size}")
    tokenizer.save_pretrained(str(folder))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ], indent=1))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config.hidden_size, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}))
    return config.to_dict()


def encoder_flops(config: dict[str, Any], length: int) -> float:
    """Forward FLOPs of one text of ``length`` pieces through a BERT encoder (multiply-adds x 2).

    Per layer and piece: the Q, K, V and output projections (4 h^2), the feed-forward (2 h i), and
    attention's scores and weighted sum (2 L h); embeddings, layer norms and softmax are left out.
    """
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return float(layers * length * 2 * (4 * h * h + 2 * h * i + 2 * length * h))


def char_lm_flops_per_char(hidden_size: int, embedding_size: int, nlayers: int = 1) -> float:
    """FLOPs per character of an LSTM LM: 4 gates x (input + hidden) x hidden multiply-adds x 2 per layer."""
    first = 8 * hidden_size * (embedding_size + hidden_size)
    rest = 8 * hidden_size * (2 * hidden_size) * (nlayers - 1)
    return float(first + rest)


def exact_length_texts(tokenizer: Any, length: int, count: int, seed: int = 0) -> list[str]:
    """``count`` texts of ``length - 2`` vocabulary words that are whole pieces: exactly ``length`` pieces each."""
    words = sorted(word for word in tokenizer.get_vocab() if word.isascii() and word.isalpha() and word.islower()
                   and len(word) >= 3)
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(words, k=length - 2)) for _ in range(count)]
    counts = {len(ids) for ids in tokenizer(texts[: min(count, 64)], add_special_tokens=True)["input_ids"]}
    if counts != {length}:
        raise ValueError(f"texts meant to be {length} pieces came out as {sorted(counts)}")
    return texts


def make_char_lm(path: Path, characters: list[str], hidden_size: int = 2048, nlayers: int = 1, embedding_size: int = 100,
                 is_forward_lm: bool = True, seed: int = 0) -> dict[str, Any]:
    """A randomly initialised Flair character LM saved as flair's ``LanguageModel.save`` does."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    items = ["<unk>", *dict.fromkeys(characters)]
    encoder = nn.Embedding(len(items), embedding_size)
    rnn = nn.LSTM(embedding_size, hidden_size, nlayers)
    decoder = nn.Linear(hidden_size, len(items))
    state_dict = {"encoder.weight": encoder.weight.detach().clone()}
    state_dict.update({f"rnn.{key}": value.detach().clone() for key, value in rnn.state_dict().items()})
    state_dict.update({f"decoder.{key}": value.detach().clone() for key, value in decoder.state_dict().items()})

    module = types.ModuleType("flair.data")

    class Dictionary:
        pass

    Dictionary.__module__, Dictionary.__qualname__ = "flair.data", "Dictionary"
    module.Dictionary = Dictionary  # type: ignore[attr-defined]
    dictionary = Dictionary()
    encoded = [item.encode("utf-8") for item in items]
    dictionary.__dict__.update({"item2idx": {item: index for index, item in enumerate(encoded)}, "idx2item": encoded,
                                "add_unk": True, "multi_label": False, "span_labels": False})
    saved = {name: sys.modules.get(name) for name in ("flair", "flair.data")}
    sys.modules.setdefault("flair", types.ModuleType("flair"))
    sys.modules["flair.data"] = module
    try:
        torch.save({"state_dict": state_dict, "dictionary": dictionary, "is_forward_lm": is_forward_lm,
                    "hidden_size": hidden_size, "nlayers": nlayers, "embedding_size": embedding_size, "nout": None,
                    "document_delimiter": "\n", "dropout": 0.1, "recurrent_type": "lstm", "has_decoder": True},
                   str(path))
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
    return {"path": str(path), "characters": len(items), "hidden_size": hidden_size, "nlayers": nlayers,
            "embedding_size": embedding_size}
