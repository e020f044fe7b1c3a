"""Config validation: every error names the field, the value and what is allowed, before any work."""
from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config, parse_config

BASE = {"input": {"path": "corpus/"}, "output": {"path": "out/"}}


def _error(data: dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, overrides)
    return str(caught.value)


def test_defaults_give_the_packaged_minilm_stack() -> None:
    config = parse_config(dict(BASE))
    assert config.stack_config() == [{"sentence_transformer": {"model": "default", "prompt": None, "prompt_name": None}}]
    assert config.output.granularity == "document" and config.token_pooling is None


def test_bad_granularity_names_field_value_and_choices() -> None:
    message = _error({**BASE, "output": {"path": "out/", "granularity": "paragraph"}})
    assert "output.granularity" in message and "'paragraph'" in message
    assert "document" in message and "sentence" in message and "token" in message


def test_unknown_key_is_an_error_naming_it() -> None:
    message = _error({**BASE, "ouptut": {"path": "x"}})
    assert "ouptut" in message and "unknown key" in message


def test_unknown_nested_key_names_full_path() -> None:
    message = _error({**BASE, "stack": [{"transformer": {"model": "default", "layer": "-1"}}]})
    assert "stack.0.transformer.layer" in message


def test_missing_required_field() -> None:
    message = _error({"input": {"path": "x"}})
    assert "output" in message and "Field required" in message


def test_stack_entry_needs_exactly_one_kind() -> None:
    message = _error({**BASE, "stack": [{"transformer": {}, "flair": {"model": "news-forward"}}]})
    assert "stack.0" in message and "one mapping {kind: settings}" in message
    message = _error({**BASE, "stack": [{"transformr": {}}]})
    assert "stack.0" in message and "transformer, flair, elmo, word" in message


def test_bad_layers_syntax() -> None:
    message = _error({**BASE, "stack": [{"transformer": {"layers": "last"}}]})
    assert "stack.0.transformer.layers" in message and "'last'" in message and "comma list" in message


def test_bad_resources_and_dtype() -> None:
    message = _error({**BASE, "resources": {"actors": 0}, "output": {"path": "o", "dtype": "int8"}})
    assert "resources.actors" in message and "output.dtype" in message and "float16" in message


def test_credentials_cannot_be_configured() -> None:
    message = _error({**BASE, "storage": {"key": "AKIA", "secret": "x"}})
    assert "storage.key" in message and "storage.secret" in message


def test_cls_pooling_needs_transformer_only_stack() -> None:
    message = _error({**BASE, "pooling": "cls", "stack": [{"transformer": {}}, {"word": {"embeddings": "glove"}}]})
    assert "cls" in message


def test_overrides_parse_yaml_values_and_list_indexes() -> None:
    config = parse_config(dict(BASE), ["output.path=s3://bucket/out", "resources.actors=[1, 3]",
                                       "stack.0.sentence_transformer.prompt_name=query", "output.dtype=float16"])
    assert config.output.path == "s3://bucket/out"
    assert config.resources.actors == [1, 3]
    assert config.specs[0].prompt_name == "query"
    assert config.output.dtype == "float16"


def test_override_errors() -> None:
    assert "expected key.path=value" in _error(dict(BASE), ["output.path"])
    assert "no item 3" in _error(dict(BASE), ["stack.3.transformer.model=x"])
    assert "resources.actors" in _error(dict(BASE), ["resources.actors=many"])


def test_load_config_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    good = tmp_path / "job.yaml"
    good.write_text("input: {path: c/}\noutput: {path: o/, granularity: sentence}\n")
    assert load_config(str(good)).output.granularity == "sentence"


def test_document_level_kinds_stand_alone_and_pool_themselves() -> None:
    alone = parse_config({**BASE, "stack": [{"sentence_transformer": {"model": "default"}}]})
    assert alone.token_pooling is None and alone.specs[0].document_level
    assert "must be the only stack entry" in _error({**BASE, "stack": [{"sentence_transformer": {}}, {"transformer": {}}]})
    assert "leave pooling unset" in _error({**BASE, "pooling": "mean", "stack": [{"transformer_document": {}}]})
    assert "token needs token embeddings" in _error({**BASE, "output": {"path": "o", "granularity": "token"},
                                                      "stack": [{"sentence_transformer": {}}]})
    assert "not both" in _error({**BASE, "stack": [{"sentence_transformer": {"prompt": "q: ", "prompt_name": "query"}}]})


def test_errors_point_to_the_config_reference() -> None:
    assert "corpus-embed config" in _error({**BASE, "ouptut": {"path": "x"}})
