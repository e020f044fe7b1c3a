"""Moving whole files between a local work folder and the index location (local path or object storage).

FAISS reads and writes local files only; the index is built in a temporary folder and each finished
file is uploaded once. Local targets get a temp-file-and-rename so a reader never sees half a file;
object stores make an upload visible only when it is complete.
"""
from __future__ import annotations

import os
import shutil
import uuid

import fsspec

from pipeline.storage import is_local


def upload(fs: fsspec.AbstractFileSystem, local_path: str, target: str) -> None:
    if is_local(fs):
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        temp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}")
        shutil.copyfile(local_path, temp)
        os.replace(temp, target)
    else:
        fs.put_file(local_path, target)


def download(fs: fsspec.AbstractFileSystem, source: str, local_path: str) -> None:
    if is_local(fs):
        shutil.copyfile(source, local_path)
    else:
        fs.get_file(source, local_path)


def remove_files(fs: fsspec.AbstractFileSystem, paths: list[str]) -> None:
    """Delete files that may already be gone (a sweep after a crash repeats deletions)."""
    for path in paths:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass
