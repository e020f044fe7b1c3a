"""A sentence classifier trained on top of a frozen embedding stack.

    python examples/classifier.py [--flair PATH] [--epochs N] [--head linear|bilstm] [--seed S] [--threads N]

The stack is the packaged MiniLM transformer plus a Flair character LM (by default the tiny test
LM in ``tests/fixtures/flair``; any Flair ``.pt`` file or published id such as ``news-forward``
works). Both are frozen: only the small head trains. The stack is an ``nn.Module`` like any
other layer, and ``stack(sentences)`` gives ``(padded [batch, tokens, dim], mask [batch, tokens])``.

The data is made here, seeded: two classes of templated sentences (money matters vs. the
outdoors) whose frames are shared and whose slot words differ, split into training and held-out
sentences. ``main()`` prints the loss per epoch and the held-out accuracy next to the majority
baseline, and returns those numbers.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from actors.stack import FlairEmbeddings, StackedEmbeddings, TransformerWordEmbeddings  # noqa: E402

DEFAULT_FLAIR = ROOT / "tests" / "fixtures" / "flair" / "flair-tiny-forward.pt"

FRAMES = [
    "the {noun} {verb} on {day} .",
    "my {noun} {verb} again , said the {person} .",
    "nobody expected the {noun} to have {verb} so fast .",
    "on {day} the {person} saw that the {noun} {verb} .",
    "a {noun} that {verb} worries every {person} .",
]
SLOTS = {
    "money": {
        "noun": ["loan", "budget", "invoice", "salary", "mortgage", "account", "tax bill", "pension fund"],
        "verb": ["was paid", "went overdrawn", "was refunded", "doubled in cost", "was audited", "got approved"],
        "person": ["banker", "accountant", "cashier", "broker", "lender"],
    },
    "outdoors": {
        "noun": ["river", "forest", "meadow", "glacier", "trail", "lake", "mountain pass", "pine grove"],
        "verb": ["was flooded", "froze over", "was blooming", "grew wild", "was washed out", "dried up"],
        "person": ["ranger", "hiker", "fisherman", "farmer", "climber"],
    },
}
DAYS = ["monday", "friday", "sunday", "new year 's day"]
LABELS = sorted(SLOTS)


def make_data(seed: int, per_class: int = 60, held_out: float = 0.3) -> tuple[list, list]:
    """``(train, test)``: lists of ``(tokens, label)``; sentences are distinct and shuffled."""
    rng = random.Random(seed)
    examples: list[tuple[list[str], int]] = []
    for label, name in enumerate(LABELS):
        seen: set[str] = set()
        while len(seen) < per_class:
            frame = rng.choice(FRAMES)
            fill = {slot: rng.choice(words) for slot, words in SLOTS[name].items()}
            text = frame.format(day=rng.choice(DAYS), **fill)
            if text not in seen:
                seen.add(text)
                examples.append((text.split(), label))
    rng.shuffle(examples)
    cut = int(len(examples) * (1 - held_out))
    return examples[:cut], examples[cut:]


class MeanPoolHead(nn.Module):
    """Masked mean over tokens, then a linear layer."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.1)
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, padded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1).to(padded.dtype)
        pooled = (padded * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.linear(self.dropout(pooled))


class BiLSTMHead(nn.Module):
    """A one-layer BiLSTM over the tokens; its last states in both directions feed a linear layer."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden, n_classes)

    def forward(self, padded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return self.linear(torch.cat([hidden[0], hidden[1]], dim=-1))


class SentenceClassifier(nn.Module):
    """Embedding stack (frozen here) + head: the stack is just another submodule."""

    def __init__(self, embeddings: StackedEmbeddings, n_classes: int, head: str = "linear") -> None:
        super().__init__()
        self.embeddings = embeddings
        heads = {"linear": MeanPoolHead, "bilstm": BiLSTMHead}
        self.head = heads[head](embeddings.embedding_length, n_classes)

    def forward(self, sentences: Sequence[Sequence[str]]) -> torch.Tensor:
        padded, mask = self.embeddings(sentences)
        return self.head(padded, mask)


def build_stack(flair: str, device: str | None = None) -> StackedEmbeddings:
    return StackedEmbeddings(
        [
            TransformerWordEmbeddings("default", layers="-1", subtoken_pooling="mean", device=device),
            FlairEmbeddings(flair, device=device),
        ]
    )


def accuracy(model: SentenceClassifier, data: list, batch_size: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data[start : start + batch_size]
            predicted = model([tokens for tokens, _ in batch]).argmax(-1).cpu()
            correct += int((predicted == torch.tensor([label for _, label in batch])).sum())
    return correct / max(1, len(data))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flair", default=str(DEFAULT_FLAIR), help="Flair LM: a .pt path or a published id")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--head", choices=("linear", "bilstm"), default="linear")
    parser.add_argument("--per-class", type=int, default=60, help="sentences made per class")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--device", default=None, help="default: the first GPU, else the CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, test = make_data(args.seed, args.per_class)
    stack = build_stack(args.flair, args.device)
    model = SentenceClassifier(stack, len(LABELS), args.head).to(stack.device)
    trainable = [p for p in model.parameters() if p.requires_grad]  # the head's: the stack is frozen
    optimizer = torch.optim.Adam(trainable, lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    print(f"{len(train)} training / {len(test)} held-out sentences; stack dim {stack.embedding_length}, "
          f"{sum(p.numel() for p in trainable)} trainable parameters")

    rng = random.Random(args.seed)
    losses = []
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()  # the frozen stack stays in eval mode: only the head's dropout is active
        order = list(range(len(train)))
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), args.batch_size):
            batch = [train[i] for i in order[start : start + args.batch_size]]
            logits = model([tokens for tokens, _ in batch])
            loss = loss_fn(logits, torch.tensor([label for _, label in batch], device=logits.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach().item() * len(batch)
        losses.append(total / len(train))
        print(f"epoch {epoch}: loss {losses[-1]:.4f}")

    majority_label = max(range(len(LABELS)), key=[label for _, label in train].count)
    majority = sum(label == majority_label for _, label in test) / len(test)
    held_out = accuracy(model, test, args.batch_size)
    print(f"held-out accuracy {held_out:.3f} (majority baseline {majority:.3f}); "
          f"{time.perf_counter() - started:.1f}s training")
    return {
        "losses": losses,
        "accuracy": held_out,
        "majority_baseline": majority,
        "n_train": len(train),
        "n_test": len(test),
        "trainable_parameters": sum(p.numel() for p in trainable),
    }


if __name__ == "__main__":
    main()
