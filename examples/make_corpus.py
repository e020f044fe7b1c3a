#!/usr/bin/env python3
"""Build the demo corpus in examples/corpus/ from Ambrose Bierce's "The Devil's Dictionary".

The source is the dictd database shipped in Debian's ``dict-devil`` package::

    apt-get download dict-devil
    dpkg -x dict-devil_*.deb /tmp/dict-devil
    python3 examples/make_corpus.py /tmp/dict-devil/usr/share/dictd/devil.dict.dz \\
        /tmp/dict-devil/usr/share/dictd/devil.index

Each dictionary entry becomes one JSONL document ``{"id", "text", "title"}``:

* ``id`` is ``devil:<headword>``: the printed headword lowercased, apostrophes and dots dropped,
  other runs of non-alphanumerics turned into ``-`` (``KING'S EVIL`` -> ``devil:kings-evil``,
  ``LL.D.`` -> ``devil:lld``). A second, different entry under the same headword gets ``-2``.
* ``title`` is the headword as printed (``ABASEMENT``, ``TABLE D'HOTE``, ``BABE or BABY``).
* ``text`` is the entry, headword line included, reflowed to single-space-separated prose: prose
  lines are joined with spaces, verse lines with `` / ``, a right-aligned attribution under a
  quotation is appended as `` -- Name``, and ``_italic_`` underscores are dropped.

The dictd metadata entries (``00-database-*``), duplicated entries and entries under
``--min-chars`` characters are skipped; of the rest, sorted by id, every ``--every``-th is kept
(the first included), which keeps all letters and the full spread of lengths. The documents go
to four shards by the first letter of the id; the e-l shard is gzipped with mtime 0 and no file
name in its header, so re-running the script gives byte-identical files.

Standard library only.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import sys
from pathlib import Path

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# (file name, first letters); a name ending in .gz is written gzipped.
SHARDS = (
    ("devil-a-d.jsonl", "abcd"),
    ("devil-e-l.jsonl.gz", "efghijkl"),
    ("devil-m-r.jsonl", "mnopqr"),
    ("devil-s-z.jsonl", "stuvwxyz"),
)

ATTRIBUTION_INDENT = 35  # right-aligned names under quotations start this far in or further
PART_OF_SPEECH = re.compile(r"^(?P<head>.+?)(?:,\s*|\s+)(?:n|v|adj|adv|pro|pron|prep|conj|interj|p|pp|x)\.")


def b64_number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + B64.index(char)
    return value


def read_entries(dict_path: Path, index_path: Path) -> list[str]:
    """Raw entry texts in index order, one per distinct (offset, length) span."""
    with gzip.open(dict_path, "rb") as handle:  # dictzip files are gzip-readable
        data = handle.read()
    seen: set[tuple[int, int]] = set()
    entries: list[str] = []
    for line in index_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        headword, offset, length = line.split("\t")[:3]
        if headword.startswith("00database") or headword.startswith("00-database"):
            continue
        span = (b64_number(offset), b64_number(length))
        if span in seen:  # several index headwords can point at one entry (BABE, BABY)
            continue
        seen.add(span)
        entries.append(data[span[0]:span[0] + span[1]].decode("utf-8"))
    return entries


def headword(first_line: str) -> str:
    """The printed headword of an entry, from its first line."""
    line = first_line.strip()
    letter = re.match(r"^([A-Z]),? +[a-z(]", line)
    if letter:  # "I is the first letter ...", "T, the twentieth letter ...", "W (double U) has ..."
        return letter.group(1)
    match = PART_OF_SPEECH.match(line)
    if match and re.sub(r"\bor\b", "", match.group("head")).isupper():
        head = match.group("head")
    else:  # "ABRACADABRA.", "CUI BONO?  [Latin] ...", "LL.D.  Letters ..."
        head = re.split(r"\s{2,}", line, maxsplit=1)[0]
        if head.endswith(".") and head.count(".") == 1:
            head = head[:-1]
    return head.strip().rstrip(",")


def slug(head: str) -> str:
    text = re.sub(r"['.]", "", head.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _clean(line: str) -> str:
    return re.sub(r"\s+", " ", line).strip()


def _join_prose(lines: list[str]) -> str:
    out = ""
    for line in lines:
        line = _clean(line)
        if not out:
            out = line
        elif re.search(r"[A-Za-z]-$", out) and not out.endswith("--") and line[:1].isalpha():
            out += line  # a word hyphenated across the line break: "Brillat-" + "Savarin"
        else:
            out += " " + line
    return out


def _is_quoted_prose(lines: list[str]) -> bool:
    """An indented run that is a prose quotation (an epitaph, a quoted passage), not verse.

    Such a run is filled to the right margin, and usually has a hanging first line: indented
    deeper than the rest, which all share one indent.
    """
    if len(lines) < 2:
        return False
    widths = [len(line.strip()) for line in lines[:-1]]
    if min(widths) >= 55:
        return True
    indents = [_indent(line) for line in lines]
    hanging = indents[0] > indents[1] and len(set(indents[1:])) == 1
    return hanging and sum(widths) / len(widths) >= 45


def _attribution_lines(lines: list[str]) -> int:
    """How many trailing lines of a block are an attribution (0 if none)."""
    last = lines[-1]
    if _indent(last) >= ATTRIBUTION_INDENT:
        return 1
    if last.strip().startswith("(") and last.strip().endswith(")") and _indent(last) >= 10:
        # "(in a funeral sermon ...)" under a name, or a parenthetical source on its own
        if len(lines) >= 2 and _indent(lines[-2]) >= ATTRIBUTION_INDENT:
            return 2
        return 1
    return 0


def reflow(raw: str) -> str:
    """One entry as single-line, single-space-separated text."""
    pieces: list[str] = []  # runs of prose, verse or attribution, in order
    kinds: list[str] = []  # the kind of each piece
    for block in re.split(r"\n[ \t]*\n", raw.strip("\n")):
        lines = [line.rstrip() for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        n_attr = _attribution_lines(lines) if len(lines) > 1 or _indent(lines[0]) >= ATTRIBUTION_INDENT else 0
        body, attribution = lines[: len(lines) - n_attr], lines[len(lines) - n_attr:]
        i = 0
        while i < len(body):
            if _indent(body[i]) == 0 or (i + 1 < len(body) and _indent(body[i + 1]) == 0):
                # prose: an optional indented first line, then flush-left lines
                j = i + 1
                while j < len(body) and _indent(body[j]) == 0:
                    j += 1
                pieces.append(_join_prose(body[i:j]))
                kinds.append("prose")
                i = j
            else:
                # verse: indented lines not followed by a flush-left continuation
                j = i
                while j < len(body) and _indent(body[j]) > 0 and not (
                        j + 1 < len(body) and _indent(body[j + 1]) == 0):
                    j += 1
                if _is_quoted_prose(body[i:j]):
                    pieces.append(_join_prose(body[i:j]))
                    kinds.append("prose")
                else:
                    pieces.append(" / ".join(_clean(line) for line in body[i:j]))
                    kinds.append("verse")
                i = j
        if attribution:
            pieces.append("-- " + " ".join(_clean(line) for line in attribution))
            kinds.append("attribution")
    text = ""
    for index, (kind, piece) in enumerate(zip(kinds, pieces)):
        if index == 0:
            text = piece
        elif kind == "verse" and kinds[index - 1] == "verse":
            text += " / " + piece  # next stanza of the same poem
        else:
            text += " " + piece
    text = re.sub(r"_([^_]+)_", r"\1", text)  # _italics_
    return re.sub(r"\s+", " ", text).strip()


def build_documents(entries: list[str], min_chars: int, every: int) -> list[dict[str, str]]:
    by_id: dict[str, dict[str, str]] = {}
    texts: set[str] = set()
    for raw in entries:
        title = headword(raw.lstrip("\n").split("\n", 1)[0])
        text = reflow(raw)
        if len(text) < min_chars or text in texts:  # too short, or the same entry twice (PRECEDENT)
            continue
        texts.add(text)
        base = "devil:" + slug(title)
        doc_id, n = base, 1
        while doc_id in by_id:
            n += 1
            doc_id = f"{base}-{n}"
        by_id[doc_id] = {"id": doc_id, "text": text, "title": title}
    ordered = [by_id[key] for key in sorted(by_id)]
    return ordered[::every]


def shard_of(doc_id: str) -> str:
    first = doc_id.split(":", 1)[1][:1]
    for name, letters in SHARDS:
        if first in letters:
            return name
    return SHARDS[0][0]  # ids starting with a digit, if any


def write_shards(documents: list[dict[str, str]], out_dir: Path) -> dict[str, list[dict[str, str]]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    grouped: dict[str, list[dict[str, str]]] = {name: [] for name, _ in SHARDS}
    for doc in documents:
        grouped[shard_of(doc["id"])].append(doc)
    for name, docs in grouped.items():
        payload = "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs).encode("utf-8")
        path = out_dir / name
        if name.endswith(".gz"):
            buffer = io.BytesIO()
            with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
                gz.write(payload)
            payload = buffer.getvalue()
        path.write_bytes(payload)
    return grouped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dict_dz", type=Path, help="path of devil.dict.dz")
    parser.add_argument("index", type=Path, help="path of devil.index")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "corpus",
                        help="output folder (default: examples/corpus next to this script)")
    parser.add_argument("--min-chars", type=int, default=40, help="drop entries with shorter text (default 40)")
    parser.add_argument("--every", type=int, default=3, help="keep every N-th entry by id (default 3)")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be at least 1")

    documents = build_documents(read_entries(args.dict_dz, args.index), args.min_chars, args.every)
    grouped = write_shards(documents, args.out)
    total_chars = 0
    for name, docs in grouped.items():
        chars = sum(len(doc["text"]) for doc in docs)
        total_chars += chars
        print(f"{name:22s} {len(docs):4d} documents {chars:8d} characters")
    print(f"{'total':22s} {len(documents):4d} documents {total_chars:8d} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
