"""One way to reach files: fsspec filesystems for local paths, ``s3://`` and ``gs://``.

Every path in corpus-embed goes through here, so object storage works wherever local files do.
Credentials are never passed explicitly: s3fs/gcsfs read them from the environment, which keeps
them out of configs, logs, run records and Parquet metadata. Transient object-storage errors
(500/503, throttling, dropped connections) are retried with backoff by botocore's retry modes,
configured from ``storage.retries``.
"""
from __future__ import annotations

import hashlib
import os
import re
import uuid
from typing import IO, Any

import fsspec

from pipeline.config import StorageConfig


def storage_options(url: str, storage: StorageConfig | None) -> dict[str, Any]:
    """fsspec keyword arguments for ``url``'s protocol, from the (credential-free) storage config."""
    storage = storage or StorageConfig()
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    if protocol in ("s3", "s3a"):
        options: dict[str, Any] = {
            "anon": storage.anon,
            "use_listings_cache": False,
            "config_kwargs": {"retries": {"max_attempts": storage.retries + 1, "mode": "standard"}},
        }
        if storage.endpoint_url:
            options["endpoint_url"] = storage.endpoint_url
        if storage.region:
            options["client_kwargs"] = {"region_name": storage.region}
        return options
    if protocol in ("gs", "gcs"):
        options = {"token": "anon"} if storage.anon else {}
        if storage.endpoint_url:
            options["endpoint_url"] = storage.endpoint_url
        return options
    return {}


def filesystem(url: str, storage: StorageConfig | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it (protocol stripped, no trailing slash)."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url, storage))
    return fs, path.rstrip("/") or path


def open_url(url: str, mode: str = "rb", storage: StorageConfig | None = None) -> IO[Any]:
    fs, path = filesystem(url, storage)
    return fs.open(path, mode)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def join(*parts: str) -> str:
    return "/".join(part.strip("/") if index else part.rstrip("/") for index, part in enumerate(parts) if part)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes, temp_dir: str | None = None) -> None:
    """Write a whole file so readers see either nothing or all of it.

    Object stores make a PUT visible only when complete; on local disks we write a temp file and
    rename it (atomic on POSIX). ``temp_dir`` (same filesystem) keeps the temp files of a process
    killed mid-write out of the target's folder, somewhere that is swept later.
    """
    if is_local(fs):
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        if temp_dir:
            os.makedirs(temp_dir, exist_ok=True)
        temp = os.path.join(temp_dir or parent, f".tmp-{uuid.uuid4().hex}")
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    else:
        fs.pipe_file(path, data)


def move(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """Move one file (a rename locally; a server-side copy then delete on object stores)."""
    if is_local(fs):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(source, target)
    else:
        fs.mv(source, target)


def remove_tree(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete a folder/prefix and everything under it; a missing one is fine."""
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(key: str, max_length: int = 80) -> str:
    """A file-name-safe, unique stand-in for ``key`` that can never escape its folder.

    Every character outside ``[A-Za-z0-9._-]`` (slashes, ``..`` runs stay harmless as they are
    joined into one component) becomes ``_``; a hash of the original key keeps names unique after
    the clean-up; the name never starts with ``_`` or ``.`` (readers skip those as hidden).
    """
    cleaned = _UNSAFE.sub("_", key).strip("._-")[:max_length] or "shard"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned}-{digest}"
