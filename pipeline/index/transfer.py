"""FAISS files in the index folder: FAISS reads and writes local paths only.

Written through ``Folder.writing`` (the project's one atomic write: a hidden temp file renamed over
the target locally, one PUT on object stores), read in place when local, else from a temporary
download.
"""
from __future__ import annotations

import os
import tempfile

import faiss

from pipeline.storage import Folder


def write_index(folder: Folder, index: faiss.Index, relative: str) -> None:
    with folder.writing(relative) as local:
        faiss.write_index(index, local)


def read_index(folder: Folder, relative: str) -> faiss.Index:
    """A FAISS file of the index folder, read in place when local, else through a temporary download."""
    if folder.is_local:
        return faiss.read_index(folder.path(relative))
    with tempfile.TemporaryDirectory(prefix="corpus-embed-index-") as work:
        local = os.path.join(work, os.path.basename(relative))
        folder.fs.get_file(folder.path(relative), local)
        return faiss.read_index(local)
