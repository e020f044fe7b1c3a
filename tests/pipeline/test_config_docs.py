"""The config reference (``corpus-embed config``) and the README against the models and the parser.

The fields are walked from the pydantic models here, independently of ``pipeline.config_docs``,
so a field the reference or the README leaves out fails a test the day it is added.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from pydantic import BaseModel

from actors.stack.specs import SPECS, parse_stack
from pipeline.cli import build_parser, main
from pipeline.config import ConfigError, JobConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEMO_CONFIG = ROOT / "examples" / "demo.yaml"
PATHS = {"input": {"path": "corpus/"}, "output": {"path": "out/"}}
MULTI_KIND = {
    **PATHS,
    "stack": [
        {"transformer": {"model": "default", "layers": "-1,-2,-3,-4", "subtoken_pooling": "first",
                         "layer_combine": "scalar_mix", "scalar_mix_weights": [0.1, 0.2, 0.3, 0.4]}},
        {"flair": {"model": "news-forward"}},
        {"flair": {"model": "news-backward", "chars_per_chunk": 256}},
        {"elmo": {"model": "small", "embedding_mode": "average"}},
        {"word": {"embeddings": "glove", "format": "glove"}},
    ],
    "pooling": "max",
    "resources": {"actors": [1, 4], "gpus_per_actor": 0.5, "precision": "bfloat16"},
    "storage": {"endpoint_url": "http://127.0.0.1:9000", "anon": True},
}


def config_paths(model: type[BaseModel] = JobConfig, prefix: str = "") -> Iterator[str]:
    """Every leaf field of a job config as a dotted path (``stack`` itself, not its kinds)."""
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from config_paths(info.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def spec_paths() -> Iterator[tuple[str, str, str]]:
    """(kind, field, dotted path) of every stack kind's fields."""
    for spec in SPECS:
        for name in spec.model_fields:
            yield spec.kind, name, f"stack[].{spec.kind}.{name}"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


# -- corpus-embed config ------------------------------------------------------------------------

def test_config_lists_every_field_with_type_default_and_meaning(capsys) -> None:
    out = _cli(capsys, "config")
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    paths = [*config_paths(), *(path for _, _, path in spec_paths())]
    assert len(paths) > 50
    assert sorted(rows) == sorted(paths)
    for path in config_paths():
        model, name = JobConfig, path
        for part in path.split(".")[:-1]:
            model, name = model.model_fields[part].annotation, path.rsplit(".", 1)[1]
        description = model.model_fields[name].description
        assert description and rows[path].endswith(description), path
    for kind, name, path in spec_paths():
        description = next(spec for spec in SPECS if spec.kind == kind).model_fields[name].description
        assert description and rows[path].endswith(description), path
    # Types and defaults as a config author writes them.
    assert rows["input.path"].split()[1:3] == ["str", "required"]
    assert re.search(r"stack\[\]\.transformer\.layers\s+str\s+'-1'\s+\"all\"", rows["stack[].transformer.layers"])
    assert re.search(r"output\.granularity\s+document \| sentence \| token\s+document\s", rows["output.granularity"])
    assert re.search(r"max_reject_ratio\s+float 0 to 1\s+0\.05\s", rows["max_reject_ratio"])
    assert re.search(r"resources\.actors\s+int \| list\[int\]\s+1\s", rows["resources.actors"])
    assert re.search(r"input\.id_field\s+str \| null\s+null\s", rows["input.id_field"])
    assert re.search(r"stack\[\]\.flair\.model\s+str\s+required\s", rows["stack[].flair.model"])
    assert re.search(r"stack\s+list of \{kind: settings\}\s+\[\{sentence_transformer: \{model: default\}\}\]", rows["stack"])
    for spec in SPECS:
        assert f"stack[].{spec.kind}: " in out


def test_run_and_embed_help_point_to_the_config_reference(capsys) -> None:
    for argv in (["run", "--help"], ["embed", "--help"], ["--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
        assert "`corpus-embed config`" in " ".join(capsys.readouterr().out.split()), argv


def test_config_errors_name_the_reference() -> None:
    with pytest.raises(ConfigError, match=r"run `corpus-embed config`"):
        parse_config({**PATHS, "stack": [{"transformer": {"layer": "-1"}}]})


def test_example_parses_back_to_the_defaults(capsys) -> None:
    text = _cli(capsys, "config", "--example")
    data = yaml.safe_load(text)
    assert data["input"]["path"] is None and data["output"]["path"] is None
    with pytest.raises(ConfigError, match="input.path"):
        parse_config(copy.deepcopy(data))
    data["input"]["path"], data["output"]["path"] = "corpus/", "out/"
    assert parse_config(data) == parse_config(PATHS)
    # Every field has its own line with a comment, the kinds not in the default stack included.
    for path in [*config_paths(), *(path for _, _, path in spec_paths())]:
        key = path.rsplit(".", 1)[-1]
        assert re.search(rf"^[ #-]*{re.escape(key)}:.*# ", text, re.M), path


def test_example_commented_kinds_are_valid_entries(capsys) -> None:
    """Uncommented, each other kind's block is a valid stack entry at that kind's defaults."""
    text = _cli(capsys, "config", "--example")
    blocks = re.findall(r"^  # (- \w+:.*\n(?:  #     .*\n)+)", text, re.M)
    kinds = {spec.kind: spec for spec in SPECS}
    seen = set()
    for block in blocks:
        (entry,) = yaml.safe_load(re.sub(r"^  # ", "", block, flags=re.M))
        ((kind, settings),) = entry.items()
        spec = kinds[kind]
        assert list(settings) == list(spec.model_fields), kind
        required = {name: "x" for name, info in spec.model_fields.items() if info.is_required()}
        (parsed,) = parse_stack([{kind: {**settings, **required}}])
        assert parsed == spec(**required), kind
        seen.add(kind)
    default_kinds = {next(iter(entry)) for entry in yaml.safe_load(text)["stack"]}
    assert seen | default_kinds == set(kinds) and not seen & default_kinds


def test_json_schema_accepts_real_configs_and_rejects_bad_ones(capsys) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(_cli(capsys, "config", "--json-schema"))
    assert schema == {"$schema": "https://json-schema.org/draft/2020-12/schema", **JobConfig.model_json_schema()}
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)

    example = yaml.safe_load(_cli(capsys, "config", "--example"))
    example["input"]["path"], example["output"]["path"] = "corpus/", "out/"
    good = [yaml.safe_load(DEMO_CONFIG.read_text()), MULTI_KIND, PATHS, example,
            {**PATHS, "stack": [{"sentence_transformer": {"model": "default", "prompt_name": "query"}}]},
            {**PATHS, "stack": [{"transformer_document": {"layers": "all", "cls_pooling": "mean"}}]}]
    for config in good:
        errors = [error.message for error in validator.iter_errors(config)]
        assert errors == [], config
        parse_config(config)                      # and the model agrees

    bad = {
        "unknown stack key": {**PATHS, "stack": [{"transformer": {"layer": "-1"}}]},
        "unknown kind": {**PATHS, "stack": [{"bert": {"model": "default"}}]},
        "two kinds in one entry": {**PATHS, "stack": [{"flair": {"model": "news-forward"}, "word": {"embeddings": "glove"}}]},
        "missing required spec field": {**PATHS, "stack": [{"flair": {}}]},
        "bad granularity": {**PATHS, "output": {"path": "out/", "granularity": "words"}},
        "missing output": {"input": {"path": "corpus/"}},
        "negative gpus": {**PATHS, "resources": {"gpus_per_actor": -1}},
        "ratio above 1": {**PATHS, "max_reject_ratio": 1.5},
        "top-level typo": {**PATHS, "ouptut": {"path": "out/"}},
        "layers as a number": {**PATHS, "stack": [{"transformer": {"layers": -1}}]},
    }
    for name, config in bad.items():
        assert list(validator.iter_errors(config)), name
        with pytest.raises(ConfigError):
            parse_config(config)


# -- README -------------------------------------------------------------------------------------

def readme_section(title: str) -> str:
    """The README's ``## title`` section, its ``###`` subsections included."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def test_readme_configuration_documents_every_field() -> None:
    section = readme_section("Configuration")
    missing = [path for path in config_paths() if f"`{path}`" not in section]
    assert not missing, f"README 'Configuration' does not document {missing}"
    rows = {match.group(1): match.group(0) for match in re.finditer(r"^\| `(\w+)` \|.*$", section, re.M)}
    for kind, name, path in spec_paths():
        assert kind in rows, f"README 'Configuration' has no table row for stack kind {kind!r}"
        assert f"`{name}`" in rows[kind], f"README 'Configuration' does not document {path}"
    assert "corpus-embed config" in section


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every leaf command (``run``, ``index build``...) and its parser."""
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subparsers and prefix:
        yield " ".join(prefix), parser
    for action in subparsers:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*prefix, name))


def test_readme_commands_list_every_subcommand_and_option() -> None:
    section = readme_section("Commands")
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    usages = [line.split() for line in block.splitlines() if line.startswith("corpus-embed ")]
    commands = dict(_commands(build_parser()))
    assert {"run", "status", "embed", "config", "index build", "index info", "search"} <= set(commands)
    for command, parser in commands.items():
        words = command.split()
        matching = [usage for usage in usages if usage[1:1 + len(words)] == words]
        assert matching, f"README 'Commands' has no `corpus-embed {command} ...` line"
        usage = " ".join(matching[0])
        for action in parser._actions:
            for option in action.option_strings:
                if option in ("-h", "--help"):
                    continue
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", usage), \
                    f"README 'Commands' does not list {command} {option}"
        assert f"`{command}`" in section, f"README 'Commands' does not describe `{command}`"
