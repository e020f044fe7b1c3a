"""Shard discovery: which files make up the corpus, what format each is, and its version.

A shard's version is what tells a changed shard from an unchanged one without reading it
(``input.change_detection: stat``, the default): its size plus its ETag on object stores (a hash
of the content the store computes), or its size, mtime and ctime on local disks. ctime matters:
``cp -p``, ``rsync -a`` and ``tar x`` restore an old mtime on new content, but the kernel sets
ctime to the moment of the write and no user call can set it back. The cost: ``chmod`` or
``touch`` of a local shard also changes its ctime, and that shard is embedded again.

``change_detection: content`` hashes every shard's bytes (sha256) at every run instead: exact
whatever the filesystem, and it reads the whole input once per run to plan, before any work.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.config import InputConfig, StorageConfig
from pipeline.errors import UserError
from pipeline.storage import filesystem, is_local_url

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
FORMATS_BY_SUFFIX = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".txt": "text", ".text": "text",
}
_GLOB_CHARS = set("*?[")


class InputError(UserError, ValueError):
    """The input path cannot be planned (missing, empty, or of unknown format)."""


@dataclass(frozen=True)
class Shard:
    url: str          # full URL (protocol included for object stores)
    key: str          # path relative to the input root: stable across runs and machines
    format: str       # jsonl | parquet | text
    compression: str | None
    size: int
    version: str      # ETag, size-mtime-ctime, or a content hash (see the module docstring)

    @property
    def fingerprint(self) -> str:
        """A short hash of the shard's size and version: changes whenever its content is replaced."""
        return hashlib.sha1(f"{self.size}:{self.version}".encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_format(name: str, declared: str) -> tuple[str | None, str | None]:
    """(format, compression) of a file name; format None when it cannot be told and none is declared."""
    stem, suffix = posixpath.splitext(name.lower())
    compression = COMPRESSIONS.get(suffix)
    if compression:
        stem, suffix = posixpath.splitext(stem)
    if declared != "auto":
        return declared, compression
    return FORMATS_BY_SUFFIX.get(suffix), compression


def _local_version(stat: os.stat_result) -> str:
    return f"{stat.st_mtime_ns}-{stat.st_ctime_ns}"


def _version(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if value not in (None, ""):
            return str(value).strip('"')
    return ""


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/"))


def discover_shards(config: InputConfig, storage: StorageConfig | None = None) -> tuple[list[Shard], list[str]]:
    """List the input's shards, sorted by key; also the names skipped for an unknown format.

    ``input.path`` may be one file, a folder/prefix (searched recursively), or a glob. Names that
    start with ``_`` or ``.`` are skipped, as every Parquet reader does.
    """
    fs, path = filesystem(config.path, storage)
    local = is_local_url(config.path)
    if local and os.path.isdir(path):
        root, files = path, _walk_local(path)
    else:
        root, files = _list(fs, path, config.path, local)

    shards: list[Shard] = []
    skipped: list[str] = []
    for name, size, version in sorted(files):
        relative = name[len(root):].lstrip("/") if root and name.startswith(root) else name
        if _is_hidden(relative):
            continue
        file_format, compression = detect_format(relative, config.format)
        if file_format is None:
            skipped.append(relative)
            continue
        shards.append(Shard(url=name if local else fs.unstrip_protocol(name), key=relative, format=file_format,
                            compression=compression, size=size, version=version))
    if config.change_detection == "content" and shards:
        shards = _with_content_versions(fs, shards)
    if not shards:
        hint = f"; skipped {len(skipped)} file(s) of unknown format such as {skipped[:3]}" if skipped else ""
        raise InputError(
            f"input.path {config.path!r} holds no shards of a known format (.jsonl, .json, .ndjson, "
            f".parquet, .txt, optionally .gz/.zst/.bz2){hint}; set input.format to read other names"
        )
    return shards, skipped


def _walk_local(root: str) -> list[tuple[str, int, str]]:
    """(path, size, version) of every file under a local folder, hidden names pruned on the way.

    ``os.scandir`` hands over each entry's stat with the listing: one system call a file, where a
    generic listing then a stat per file costs several (100,000 shards plan in seconds).
    """
    found: list[tuple[str, int, str]] = []
    folders = [root]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.name.startswith(("_", ".")):
                    continue
                if entry.is_dir():
                    folders.append(entry.path)
                elif entry.is_file():
                    stat = entry.stat()
                    found.append((entry.path, stat.st_size, _local_version(stat)))
    return found


def _list(fs: Any, path: str, url: str, local: bool) -> tuple[str, list[tuple[str, int, str]]]:
    """The root the shard keys are relative to, and (path, size, version) of each file: a glob, a
    folder/prefix or one file, through the store's own listing (sizes and ETags come with it)."""
    if any(char in path for char in _GLOB_CHARS):
        parts = path.split("/")
        root = "/".join(parts[: next(i for i, p in enumerate(parts) if set(p) & _GLOB_CHARS)])
        entries = fs.glob(path, detail=True)
    elif fs.isdir(path):
        root, entries = path, fs.find(path, detail=True)
    elif fs.isfile(path):
        root, entries = posixpath.dirname(path), {path: fs.info(path)}
    else:
        raise InputError(f"input.path {url!r} does not exist (no file, folder or glob match)")
    files = []
    for name, info in entries.items():
        if info.get("type") == "directory":
            continue
        version = _local_version(os.stat(name)) if local else _version(info)
        files.append((name, int(info.get("size") or 0), version))
    return root, files


def _with_content_versions(fs: Any, shards: list[Shard]) -> list[Shard]:
    """The shards with a sha256 of their bytes as version (read in parallel)."""

    def content_hash(shard: Shard) -> str:
        digest = hashlib.sha256()
        with fs.open(fs._strip_protocol(shard.url), "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return "sha256-" + digest.hexdigest()

    with ThreadPoolExecutor(max_workers=16) as pool:
        versions = list(pool.map(content_hash, shards))
    return [Shard(**{**shard.to_dict(), "version": version}) for shard, version in zip(shards, versions)]
