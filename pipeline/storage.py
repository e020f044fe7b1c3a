"""One way to reach files: a ``Folder`` over fsspec, for local paths, ``s3://`` and ``gs://``.

Every path in corpus-embed goes through here, so object storage works wherever local files do.
A ``Folder`` is one root (an output, an index, an input prefix) and the few operations the
pipeline needs, all with paths relative to that root: listing, reading, one atomic write, an
exclusive create and a compare-and-swap (for the lease), removal and moves.

Credentials are never passed explicitly: s3fs/gcsfs read them from the environment, which keeps
them out of configs, logs, run records and Parquet metadata. Transient object-storage errors
(500/503, throttling, dropped connections) are retried with backoff by botocore's retry modes,
configured from ``storage.retries``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import uuid
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator

import fsspec

from pipeline.config import StorageConfig
from pipeline.errors import UserError, one_line

if TYPE_CHECKING:
    import pyarrow.parquet as pq

# Hidden temp files of atomic writes in progress (or of a process killed during one): readers skip them.
TEMP_PREFIX = ".tmp-"

# A probe of an object store before a run gives up after this many seconds per attempt and this
# many retries: a refused endpoint fails within about a quarter of a minute, not after minutes of
# the retries a running job wants (``storage.retries``).
PROBE_CONNECT_TIMEOUT_S = 3
PROBE_RETRIES = 2


class StorageError(UserError):
    """A store that cannot be used: unreachable endpoint, missing credentials, missing bucket."""


@contextlib.contextmanager
def storage_errors(url: str, role: str, storage: StorageConfig | None = None) -> Iterator[None]:
    """Turn what object-store clients raise into one-line ``StorageError``s naming ``role`` and ``url``."""
    try:
        yield
    except (StorageError, FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise
    except PermissionError as error:
        raise StorageError(f"{role} {url!r}: access denied ({one_line(error, 200)}); check the credentials in "
                           f"the environment and the bucket's permissions") from None
    except Exception as error:  # noqa: BLE001 - botocore, aiohttp and gcsfs raise their own classes
        name = type(error).__name__
        endpoint = (storage.endpoint_url if storage else None) or "the default endpoint"
        if "Credentials" in name or "credentials" in str(error).lower():
            raise StorageError(f"{role} {url!r}: no credentials for {protocol_of(url)}:// (set AWS_ACCESS_KEY_ID and "
                               f"AWS_SECRET_ACCESS_KEY in the environment, or storage.anon: true for a public "
                               f"bucket)") from None
        if "Connect" in name or "Timeout" in name or isinstance(error, ConnectionError):
            raise StorageError(f"{role} {url!r}: cannot reach {endpoint} ({one_line(error, 200)}); check "
                               f"storage.endpoint_url and the network") from None
        raise


def check_output_folder(url: str, storage: StorageConfig | None) -> Folder:
    """The output folder, checked before any work: reachable, its bucket present, not a file.

    Object stores are probed with a client that gives up within seconds (``PROBE_*``).
    """
    with storage_errors(url, "output.path", storage):
        probe = Folder(url, storage, probe=True)
        if not probe.is_local:
            bucket = probe.root.split("/", 1)[0]
            try:
                probe.fs.info(bucket)
            except FileNotFoundError:
                raise StorageError(f"output.path {url!r}: bucket {bucket!r} does not exist (create it, or fix "
                                   f"output.path)") from None
        if probe.isfile():
            raise StorageError(f"output.path {url!r} is a file; give a folder (or prefix) for the output")
        if probe.is_local:
            parent = os.path.dirname(probe.root)
            while parent and not os.path.exists(parent):
                parent = os.path.dirname(parent)
            if parent and not os.path.isdir(parent):
                raise StorageError(f"output.path {url!r}: {parent!r} is a file, not a folder")
            if parent and not os.access(parent, os.W_OK):
                raise StorageError(f"output.path {url!r}: {parent!r} is not writable")
    return Folder(url, storage)


def protocol_of(url: str) -> str:
    return fsspec.core.split_protocol(url)[0] or "file"


def is_local_url(url: str) -> bool:
    return protocol_of(url) in ("file", "local")


def storage_options(url: str, storage: StorageConfig | None, probe: bool = False) -> dict[str, Any]:
    """fsspec keyword arguments for ``url``'s protocol, from the (credential-free) storage config.

    ``probe`` makes a client that gives up fast (see ``PROBE_*``), for checks before a run.
    """
    storage = storage or StorageConfig()
    protocol = protocol_of(url)
    if protocol in ("s3", "s3a"):
        retries = PROBE_RETRIES if probe else storage.retries
        config: dict[str, Any] = {"retries": {"max_attempts": retries + 1, "mode": "standard"}}
        if probe:
            config.update(connect_timeout=PROBE_CONNECT_TIMEOUT_S, read_timeout=PROBE_CONNECT_TIMEOUT_S * 2)
        options: dict[str, Any] = {"anon": storage.anon, "use_listings_cache": False, "config_kwargs": config}
        if probe:
            options["skip_instance_cache"] = True
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


def filesystem(url: str, storage: StorageConfig | None = None, probe: bool = False) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it (protocol stripped, no trailing slash)."""
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url, storage, probe))
    return fs, path.rstrip("/") or path


def read_url(url: str, storage: StorageConfig | None = None) -> bytes:
    """The whole content of one file (a config, say)."""
    fs, path = filesystem(url, storage)
    with fs.open(path, "rb") as handle:
        return handle.read()


def parquet_file(handle: IO[bytes]) -> "pq.ParquetFile":
    """A ``pyarrow.parquet.ParquetFile`` over a Python file object (an fsspec handle), without pre-buffering.

    A process that leaves pyarrow's thread pools busy, or their threads still winding down, when it
    exits can abort in its teardown with SIGABRT ("terminate called without an active exception",
    apache/arrow#34314) after all its work is done: an index build that succeeded exits non-zero.
    Pre-buffering reads column chunks on pyarrow's IO threads, each taking the GIL to call the Python
    file; fsspec handles keep their own read-ahead, so it gains nothing here and is off. Reads in
    the short processes of the index commands, and of the ledger's digest, also pass
    ``use_threads=False``: the aborts came from the CPU pool's threads, and those files are small.
    """
    import pyarrow.parquet as pq

    return pq.ParquetFile(handle, pre_buffer=False)


def join(*parts: str) -> str:
    return "/".join(part.strip("/") if index else part.rstrip("/") for index, part in enumerate(parts) if part)


class Folder:
    """One folder (local or in object storage) and the operations the pipeline performs in it.

    Paths are relative to the folder and use ``/``. Picklable, so Ray tasks receive one as is.
    """

    def __init__(self, url: str, storage: StorageConfig | None = None, probe: bool = False):
        self.url = url.rstrip("/") if "://" in url else os.path.abspath(os.path.expanduser(url))
        self.storage = storage or StorageConfig()
        self.fs, self.root = filesystem(self.url, self.storage, probe)
        self.is_local = is_local_url(self.url)

    def __repr__(self) -> str:
        return f"Folder({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Folder, (self.url, self.storage))

    # -- naming ------------------------------------------------------------------------------
    def path(self, relative: str = "") -> str:
        """The filesystem path of ``relative`` (what ``self.fs`` takes)."""
        return join(self.root, relative) if relative else self.root

    def url_of(self, relative: str = "") -> str:
        """The full URL of ``relative`` (protocol included for object stores)."""
        return join(self.url, relative) if relative else self.url

    def child(self, relative: str) -> "Folder":
        return Folder(self.url_of(relative), self.storage)

    def relative(self, path: str) -> str:
        """``path`` (as the filesystem lists it) relative to this folder."""
        path = path.rstrip("/")
        return path[len(self.root):].lstrip("/") if path.startswith(self.root) else path

    # -- reading -------------------------------------------------------------------------------
    def exists(self, relative: str = "") -> bool:
        return self.fs.exists(self.path(relative))

    def isdir(self, relative: str = "") -> bool:
        return self.fs.isdir(self.path(relative))

    def isfile(self, relative: str = "") -> bool:
        return self.fs.isfile(self.path(relative))

    def info(self, relative: str = "") -> dict[str, Any]:
        return self.fs.info(self.path(relative))

    def listdir(self, relative: str = "") -> list[str]:
        """Names directly under ``relative`` (files and folders), sorted; [] when it does not exist."""
        if self.is_local:      # names only: no stat per entry (a ledger of 100,000 records lists in ms)
            try:
                return sorted(os.listdir(self.path(relative)))
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            entries = self.fs.ls(self.path(relative), detail=False)
        except FileNotFoundError:
            return []
        base = self.path(relative)
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries if entry.rstrip("/") != base)

    def find(self, relative: str = "") -> list[str]:
        """Every file under ``relative``, recursively, as paths relative to this folder; [] if none."""
        try:
            found = self.fs.find(self.path(relative))
        except FileNotFoundError:
            return []
        return sorted(self.relative(path) for path in found)

    def open(self, relative: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        return self.fs.open(self.path(relative), mode, **kwargs)

    def read_bytes(self, relative: str) -> bytes:
        with self.open(relative, "rb") as handle:
            return handle.read()

    def read_json(self, relative: str) -> Any:
        """The JSON document at ``relative``, or None when there is none."""
        try:
            return json.loads(self.read_bytes(relative))
        except FileNotFoundError:
            return None

    # -- writing -------------------------------------------------------------------------------
    def write_atomic(self, relative: str, data: bytes) -> None:
        """Write a whole file so readers see either nothing or all of it (see ``writing``)."""
        if not self.is_local:
            self.fs.pipe_file(self.path(relative), data)    # a PUT is visible only when complete
            return
        with self.writing(relative) as temp:
            with open(temp, "wb") as handle:
                handle.write(data)

    @contextlib.contextmanager
    def writing(self, relative: str) -> Iterator[str]:
        """A local path to write ``relative``'s content to, published atomically when the block ends.

        The one atomic write of the project. On local disks the path is a hidden temp file beside
        the target (``.tmp-*``: every reader skips it), fsynced and renamed over the target (atomic
        on POSIX). On object stores it lies in a local temporary folder and is uploaded with one
        PUT, which the store makes visible only when complete; large files (FAISS indexes) stream
        from disk either way. An exception in the block publishes nothing and leaves no temp file.
        """
        if not self.is_local:
            with tempfile.TemporaryDirectory(prefix="corpus-embed-") as work:
                local = os.path.join(work, os.path.basename(relative) or "file")
                yield local
                self.fs.put_file(local, self.path(relative))
            return
        target = self.path(relative)
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

    def remove_stale_temps(self, folders: Iterable[str], written_before: float) -> None:
        """Delete the temp files (``.tmp-*``) of writes begun before ``written_before`` in ``folders``.

        A process killed between writing a temp file and renaming it leaves the temp behind; only
        a writer that knows every earlier writer is dead (the lease holder) may call this, with the
        time it took the lease, so that no write in progress loses its file. Object stores have no
        temp files (one PUT per write).
        """
        if not self.is_local:
            return
        for folder in folders:
            for name in self.listdir(folder):
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = self.path(f"{folder}/{name}" if folder else name)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < written_before:
                        os.unlink(path)

    def write_json(self, relative: str, data: Any, indent: int | None = None) -> None:
        self.write_atomic(relative, json.dumps(data, sort_keys=True, indent=indent, default=str).encode())

    def create_exclusive(self, relative: str, data: bytes) -> str | None:
        """Create ``relative`` only if it does not exist; its version token, or None if it existed.

        Local disks: ``O_CREAT | O_EXCL`` (atomic, also on NFSv3+). S3: a conditional PUT
        (``If-None-Match: *``), atomic on AWS and on servers that implement it. Elsewhere (GCS
        through gcsfs) it falls back to look-then-write, which two writers can race.
        """
        target = self.path(relative)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                descriptor = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            return self.version_token(relative)
        if protocol_of(self.url) in ("s3", "s3a"):
            try:
                response = self.fs.pipe_file(target, data, mode="create")
            except FileExistsError:
                return None
            return _etag(response) or self.version_token(relative)
        if self.fs.exists(target):
            return None
        self.fs.pipe_file(target, data)
        return self.version_token(relative)

    def replace_if(self, relative: str, data: bytes, token: str) -> str | None:
        """Overwrite ``relative`` only if its version is still ``token``; the new token, or None if not.

        S3: a conditional PUT (``If-Match: <etag>``). Local disks: compare, then an atomic rename;
        the gap between the two is a few microseconds on one machine. GCS: compare, then write.
        """
        target = self.path(relative)
        if protocol_of(self.url) in ("s3", "s3a"):
            try:
                response = self.fs.pipe_file(target, data, IfMatch=token)
            except (FileNotFoundError, OSError):
                return None
            return _etag(response) or self.version_token(relative)
        if self.version_token(relative) != token:
            return None
        self.write_atomic(relative, data)
        return self.version_token(relative)

    def version_token(self, relative: str) -> str | None:
        """What changes whenever the file's content is replaced (ETag, or a local content hash)."""
        try:
            if self.is_local:
                with open(self.path(relative), "rb") as handle:
                    return hashlib.sha1(handle.read()).hexdigest()
            info = self.fs.info(self.path(relative), refresh=True) if protocol_of(self.url) in ("s3", "s3a") else self.fs.info(self.path(relative))
        except FileNotFoundError:
            return None
        return str(info.get("ETag") or info.get("etag") or info.get("generation") or info.get("mtime") or "").strip('"') or None

    def remove(self, relative: str) -> None:
        """Delete a file, or a folder/prefix and everything under it; a missing one is fine."""
        target = self.path(relative)
        try:
            if self.fs.isdir(target):
                self.fs.rm(target, recursive=True)
            elif self.fs.exists(target):
                self.fs.rm(target)
        except FileNotFoundError:
            pass
        if self.is_local and relative:
            self._drop_empty_parents(os.path.dirname(target))

    def remove_if_empty(self, relative: str) -> None:
        """Drop a local folder left empty (object stores have no empty folders)."""
        if self.is_local:
            self._drop_empty_parents(self.path(relative))

    def _drop_empty_parents(self, folder: str) -> None:
        while folder.startswith(self.root) and folder != self.root:
            try:
                os.rmdir(folder)
            except OSError:
                return
            folder = os.path.dirname(folder)

    def move(self, source: str, target: str) -> None:
        """Move one file (a rename locally; a server-side copy then delete on object stores).

        Locally the source's own folder is dropped once empty, and only that one: a writer may be
        creating a sibling folder in the same parent at this moment.
        """
        if self.is_local:
            os.makedirs(os.path.dirname(self.path(target)), exist_ok=True)
            os.replace(self.path(source), self.path(target))
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(self.path(source)))
        else:
            self.fs.mv(self.path(source), self.path(target))


def _etag(response: Any) -> str | None:
    if isinstance(response, dict) and response.get("ETag"):
        return str(response["ETag"]).strip('"')
    return None


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
