"""Whole files between FAISS (which reads and writes local paths only) and the index folder.

Small files (``index.json``) go through ``Folder.write_atomic``. The large ones — FAISS files and
id maps, written by FAISS and Parquet writers to a local path — are published here, streamed and
atomically, without holding them in memory: on a local index folder they are written straight to a
hidden ``.tmp-*`` file beside the target (the temp naming ``Folder.write_atomic`` uses, which every
reader skips and ``build``'s sweep removes after a crash), fsynced and renamed over it; on object
stores they are written in a local temporary folder and uploaded with one ``put_file``, which the
store makes visible only when complete. This is the only such code in the index package.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from typing import Iterator

import faiss

from pipeline.storage import Folder

TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def publishing(folder: Folder, relative: str) -> Iterator[str]:
    """A local path to write ``relative``'s content to; published atomically when the block ends.

    An exception inside the block publishes nothing and leaves no temp file behind.
    """
    if folder.is_local:
        target = folder.path(relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temp = os.path.join(os.path.dirname(target), f"{TEMP_PREFIX}{uuid.uuid4().hex}")
        try:
            yield temp
            descriptor = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temp, target)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    else:
        with tempfile.TemporaryDirectory(prefix="corpus-embed-index-") as work:
            local = os.path.join(work, os.path.basename(relative))
            yield local
            folder.fs.put_file(local, folder.path(relative))


def write_index(folder: Folder, index: faiss.Index, relative: str) -> None:
    with publishing(folder, relative) as local:
        faiss.write_index(index, local)


def read_index(folder: Folder, relative: str) -> faiss.Index:
    """A FAISS file of the index folder, read in place when local, else through a temporary download."""
    if folder.is_local:
        return faiss.read_index(folder.path(relative))
    with tempfile.TemporaryDirectory(prefix="corpus-embed-index-") as work:
        local = os.path.join(work, os.path.basename(relative))
        folder.fs.get_file(folder.path(relative), local)
        return faiss.read_index(local)
