"""The job configuration: one pydantic model validates the whole job before any work starts.

A config is YAML or JSON, on disk or in object storage; any field can be overridden from the
command line with ``--set dotted.path=value`` (values parsed as YAML, so ``--set resources.actors=2``
gives an int). Errors name the field, the value and what is allowed. Every field carries a one-line
description: ``corpus-embed config`` prints them, so the reference cannot go stale.

The ``stack:`` entries are the stack specs of ``actors.stack.specs`` (one per kind, torch-free):
the config holds them as they are, so a kind's fields are defined in its spec and nowhere else.
"""
from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from actors.stack.specs import StackEntry, StackSpec, default_stack, entry
from pipeline.errors import UserError

CONFIG_HELP = "run `corpus-embed config` for every field, its type, default and meaning"


class ConfigError(UserError, ValueError):
    """A config that cannot run; the message names each bad field, its value and what is allowed."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(_Strict):
    """Where the corpus is and how to read its rows. Every field here shapes the rows a unit yields,
    so changing one re-embeds the affected units (see ``pipeline.units.row_settings``)."""

    path: str = Field(description="a file, a folder/prefix (read recursively) or a glob; local, s3:// or gs://")
    format: Literal["auto", "jsonl", "parquet", "text"] = Field(
        "auto", description="auto: from each file's suffix (.jsonl .json .ndjson .parquet .pq .txt, optionally .gz .zst .bz2)")
    text_field: str = Field("text", description="the field (JSONL) or column (Parquet) holding each document's text")
    id_field: str | None = Field(None, description='the field holding each document\'s id; unset: ids are "<shard-key>:<row>"')
    id_type: Literal["auto", "string", "int"] = Field(
        "auto", description="auto: ids keep the input's type (ints stay ints; a row whose id type differs from its "
                            "unit's first is rejected); string: every id becomes text; int: integer strings become ints")
    max_chars: int = Field(200_000, gt=0, description="longer texts are rejected with reason too_long (raise it for book-length documents)")
    rows_per_unit: int = Field(100_000, gt=0, description="Parquet row groups are grouped into units of about this many rows")
    change_detection: Literal["stat", "content"] = Field(
        "stat", description="how a changed shard is noticed: stat (size + ETag on object stores; size + mtime + ctime "
                            "on local disks) or content (a sha256 of every shard's bytes at each run: reads the whole input)")


class OutputConfig(_Strict):
    path: str = Field(description="the output folder/prefix; local, s3:// or gs://")
    granularity: Literal["document", "sentence", "token"] = Field(
        "document", description="one vector per document, per sentence, or every token's vector per sentence")
    dtype: Literal["float32", "float16"] = Field("float32", description="the stored vectors' type (float16 halves the output)")
    keep_text: bool = Field(False, description="document granularity: store each document's text beside its vector "
                                               "(sentence granularity always stores the sentence text)")


class ResourcesConfig(_Strict):
    actors: int | Annotated[list[int], Field(min_length=2, max_length=2)] = Field(
        1, description="embedding actors, or [min, max] for a pool that grows and shrinks with the work")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs each actor asks Ray for (fractions share a GPU)")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs each actor asks Ray for")
    max_batch_tokens: int | None = Field(
        None, gt=0, description="padded tokens per forward pass (memory bound; never changes vectors); unset: each "
                                "kind's own (2048 for transformers on CPU; on GPU 8192, 32768 for sentence_transformer)")
    precision: Literal["auto", "float32", "float64", "bfloat16", "float16"] = Field(
        "auto", description="auto: bf16 autocast on GPU, exact float32 on CPU; bfloat16 autocasts on CPU too (fast with "
                            "AMX/AVX512-BF16, cosine ~0.9999 to float32); float64: ELMo's recurrence in float64")
    batch_rows: int = Field(512, gt=0, description="documents handed to an actor per call")
    read_block_rows: int = Field(1024, gt=0, description="rows per block the readers emit, each sorted by text length "
                                                         "before actor calls are cut from it")

    @field_validator("actors")
    @classmethod
    def _actors_positive(cls, value: int | list[int]) -> int | list[int]:
        sizes = value if isinstance(value, list) else [value]
        if any(size < 1 for size in sizes) or (isinstance(value, list) and value[0] > value[1]):
            raise ValueError("actors must be a positive int or [min, max] with 1 <= min <= max")
        return value

    @property
    def max_actors(self) -> int:
        return self.actors[1] if isinstance(self.actors, list) else self.actors


class StorageConfig(_Strict):
    """Object-storage settings. Credentials are never configured here: they come from the environment."""

    endpoint_url: str | None = Field(None, description="an S3-compatible endpoint (MinIO, a local test server); unset: AWS")
    region: str | None = Field(None, description="the S3 region; unset: from the environment")
    anon: bool = Field(False, description="read public buckets without credentials")
    retries: int = Field(8, ge=0, description="retries of transient object-storage errors (500/503, throttling, dropped connections)")
    shared_filesystem: bool = Field(False, description="local input/output paths are on a filesystem every Ray node mounts "
                                                       "at the same place (NFS, Lustre); required for local paths on a multi-node cluster")


class JobConfig(_Strict):
    input: InputConfig = Field(description="the corpus")
    output: OutputConfig = Field(description="where the vectors go")
    stack: list[StackEntry] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [entry(spec) for spec in default_stack()], min_length=1,
        description="the embeddings, concatenated in this order; each entry is {kind: settings}")
    pooling: Literal["mean", "max", "min", "cls"] | None = Field(
        None, description="how token vectors become sentence/document vectors: mean (the default), max, min, or cls "
                          "(a stack of one transformer); not for document-level kinds, which pool as their model says")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="actors, batching and precision")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="object storage")
    max_reject_ratio: float = Field(0.05, ge=0, le=1, description="a unit with a larger share of rejected rows is not "
                                                                  "committed (it fails, its rejects kept for inspection)")
    max_prune_ratio: float = Field(0.5, ge=0, le=1, description="a run that would remove a larger share of the committed "
                                                                "units (their shards left the input) refuses before any change")
    lease_timeout_s: float = Field(300.0, gt=0, description="a run's lease on its output is taken over by another run once "
                                                            "its heartbeat is this old (the holder died)")

    @model_validator(mode="after")
    def _stack_fits(self) -> "JobConfig":
        specs = self.specs
        if any(spec.document_level for spec in specs):
            if len(specs) != 1:
                raise ValueError(f"stack: {specs[0].kind if specs[0].document_level else 'a document-level kind'} embeds "
                                 f"whole texts and must be the only stack entry; got {[spec.kind for spec in specs]}")
            if self.pooling is not None:
                raise ValueError(f"pooling: {specs[0].kind} pools as its model says; leave pooling unset")
            if self.output.granularity == "token":
                raise ValueError(f"output.granularity: token needs token embeddings; {specs[0].kind} gives one vector "
                                 f"per text (use document or sentence)")
        if self.pooling == "cls" and [spec.kind for spec in specs] != ["transformer"]:
            raise ValueError("pooling 'cls' needs a stack of exactly one transformer")
        return self

    @property
    def specs(self) -> list[StackSpec]:
        """The stack's specs, in order."""
        return [item.spec for item in self.stack]

    @property
    def token_pooling(self) -> str | None:
        """The pooling of token vectors (mean unless set); None for a document-level stack."""
        return None if self.specs[0].document_level else (self.pooling or "mean")

    @property
    def pooling_description(self) -> str:
        """How vectors are pooled, in words (Parquet metadata): the token pooling, or the model's own."""
        return self.token_pooling or f"{self.specs[0].kind}'s own"

    def stack_config(self) -> list[dict[str, Any]]:
        """The stack in config form (``[{"transformer": {...}}, ...]``), as the manifest records it."""
        return [spec.get_config_dict() for spec in self.specs]


def _location(parts: tuple[Any, ...]) -> str:
    """``stack.0.transformer.transformer.layers`` → ``stack.0.transformer.layers`` (the union's tag repeats the key)."""
    names: list[str] = []
    for part in map(str, parts):
        if not names or names[-1] != part:
            names.append(part)
    return ".".join(names) or "(top level)"


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        lines.append(f"  {_location(item['loc'])}: {message} (got {item.get('input')!r})")
    return "invalid config (" + CONFIG_HELP + "):\n" + "\n".join(lines)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested dicts/lists, creating dicts on the way (list indexes must exist)."""
    parts = dotted.split(".")
    node: Any = data
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {dotted}: {'.'.join(parts[:position]) or 'list'} has no item {part}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[:position])} is not a mapping")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings; values are parsed as YAML scalars/lists."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {override!r}: expected key.path=value")
        set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return data


def parse_config(data: dict[str, Any], overrides: list[str] | None = None) -> JobConfig:
    """Validate a config mapping (after overrides) into a JobConfig, or raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config: the top level must be a mapping, got {type(data).__name__}")
    data = copy.deepcopy(data)
    overrides = list(overrides or [])
    if "stack" not in data and any(item.startswith("stack.") for item in overrides):
        data["stack"] = [spec.get_config_dict() for spec in default_stack()]
    data = apply_overrides(data, overrides)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error)) from None


def load_config(path: str, overrides: list[str] | None = None, storage: StorageConfig | None = None) -> JobConfig:
    """Read a YAML/JSON config from a local path or object storage and validate it."""
    from pipeline.storage import StorageError, read_url

    try:
        text = read_url(path, storage).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (StorageError, UnicodeDecodeError) as error:
        raise ConfigError(f"config {path} cannot be read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML/JSON: {error}") from None
    return parse_config(data or {}, overrides)
