"""The job configuration: one pydantic model validates the whole job before any work starts.

A config is YAML or JSON, on disk or in object storage; any field can be overridden from the
command line with ``--set dotted.path=value`` (values parsed as YAML, so ``--set resources.actors=2``
gives an int). Errors name the field, the value and what is allowed.
"""
from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config that cannot run; the message names each bad field, its value and what is allowed."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(_Strict):
    path: str = Field(description="file, folder/prefix or glob; s3://, gs://, file paths")
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"
    text_field: str = "text"
    id_field: str | None = Field(default=None, description='None: ids are "<shard-key>:<row>"')
    max_chars: int = Field(default=200_000, gt=0, description="longer texts are rejected with a reason (raise it for book-length documents)")
    rows_per_unit: int = Field(default=100_000, gt=0, description="Parquet row groups are grouped into units of about this many rows")


class OutputConfig(_Strict):
    path: str
    granularity: Literal["document", "sentence", "token"] = "document"
    dtype: Literal["float32", "float16"] = "float32"


class TransformerLayer(_Strict):
    model: str = "default"
    layers: str = "-1"
    layer_mean: bool = True
    subtoken_pooling: Literal["first", "last", "first_last", "mean"] = "first"
    layer_combine: Literal["mean", "sum", "concat", "scalar_mix"] | None = None
    use_scalar_mix: bool = False
    scalar_mix_weights: list[float] | None = None
    scalar_mix_gamma: float = 1.0
    scalar_mix_layer_norm: bool = False
    allow_long_sentences: bool = True

    @field_validator("layers")
    @classmethod
    def _layers_syntax(cls, value: str) -> str:
        if value.strip() == "all":
            return "all"
        try:
            [int(part) for part in value.split(",")]
        except ValueError:
            raise ValueError('layers must be "all" or a comma list of integers such as "-1,-2,-3,-4"') from None
        return value.replace(" ", "")


class FlairLayer(_Strict):
    model: str
    with_whitespace: bool = True
    chars_per_chunk: int = Field(default=512, gt=0)


class ELMoLayer(_Strict):
    model: str = "original"
    options_file: str | None = None
    weight_file: str | None = None
    embedding_mode: Literal["all", "top", "average"] = "all"


class WordLayer(_Strict):
    embeddings: str


LAYER_KINDS = ("transformer", "flair", "elmo", "word")


class StackLayer(_Strict):
    """One entry of ``stack:``: a mapping with exactly one key naming the embedding kind."""

    transformer: TransformerLayer | None = None
    flair: FlairLayer | None = None
    elmo: ELMoLayer | None = None
    word: WordLayer | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "StackLayer":
        chosen = [kind for kind in LAYER_KINDS if getattr(self, kind) is not None]
        if len(chosen) != 1:
            raise ValueError(f"each stack entry needs exactly one of {', '.join(LAYER_KINDS)}; got {chosen or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in LAYER_KINDS if getattr(self, kind) is not None)

    @property
    def settings(self) -> _Strict:
        return getattr(self, self.kind)


def _default_stack() -> list[StackLayer]:
    return [StackLayer(transformer=TransformerLayer(model="default", layers="-1", subtoken_pooling="mean"))]


class ResourcesConfig(_Strict):
    actors: int | Annotated[list[int], Field(min_length=2, max_length=2)] = Field(
        default=1, description="actor pool size, or [min, max] for autoscaling"
    )
    gpus_per_actor: float = Field(default=0.0, ge=0)
    cpus_per_actor: float = Field(default=1.0, gt=0)
    max_batch_tokens: int = Field(default=16384, gt=0)
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="auto: bf16 autocast on GPU, exact float32 on CPU; bfloat16 autocasts on CPU too "
                    "(fast where the CPU has AMX or AVX512-BF16; vectors at cosine ~0.9999 to float32)",
    )
    batch_rows: int = Field(default=512, gt=0, description="documents handed to an actor per call")
    read_block_rows: int = Field(default=1024, gt=0, description="rows per block the readers emit")

    @field_validator("actors")
    @classmethod
    def _actors_positive(cls, value: int | list[int]) -> int | list[int]:
        sizes = value if isinstance(value, list) else [value]
        if any(size < 1 for size in sizes) or (isinstance(value, list) and value[0] > value[1]):
            raise ValueError("actors must be a positive int or [min, max] with 1 <= min <= max")
        return value


class StorageConfig(_Strict):
    """Object-storage settings. Credentials are never configured here: they come from the environment."""

    endpoint_url: str | None = None
    region: str | None = None
    anon: bool = False
    retries: int = Field(default=8, ge=0)


class JobConfig(_Strict):
    input: InputConfig
    output: OutputConfig
    stack: list[StackLayer] = Field(default_factory=_default_stack, min_length=1)
    pooling: Literal["mean", "max", "min", "cls"] = "mean"
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    max_reject_ratio: float = Field(default=0.05, ge=0, le=1, description="the run fails above this share of rejected rows")

    @model_validator(mode="after")
    def _cls_needs_transformer_only(self) -> "JobConfig":
        if self.pooling == "cls" and [layer.kind for layer in self.stack] != ["transformer"]:
            raise ValueError("pooling 'cls' needs a stack of exactly one transformer")
        return self

    def stack_spec(self) -> list[dict[str, Any]]:
        """The stack as plain dicts (``[{"transformer": {...}}, ...]``): what builds and fingerprints it."""
        return [{layer.kind: layer.settings.model_dump()} for layer in self.stack]


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see `corpus-embed run --help` for the fields)"
        lines.append(f"  {field}: {message} (got {item.get('input')!r})")
    return "invalid config:\n" + "\n".join(lines)


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
        data["stack"] = [{layer.kind: layer.settings.model_dump()} for layer in _default_stack()]
    data = apply_overrides(data, overrides)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error)) from None


def load_config(path: str, overrides: list[str] | None = None, storage: StorageConfig | None = None) -> JobConfig:
    """Read a YAML/JSON config from a local path or object storage and validate it."""
    from pipeline.storage import open_url

    try:
        with open_url(path, "rb", storage) as handle:
            text = handle.read().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML/JSON: {error}") from None
    return parse_config(data or {}, overrides)
