"""The command line: exit codes and messages for bad usage (no Ray is started for these)."""
from __future__ import annotations

import pytest

from pipeline.cli import main


def test_bad_config_exits_2_naming_the_field(tmp_path, capsys) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("input: {path: corpus/}\noutput: {path: out/, granularity: words}\n")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "output.granularity" in err and "'words'" in err


def test_missing_input_exits_2(tmp_path, capsys) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(f"input: {{path: {tmp_path / 'nope'}}}\noutput: {{path: {tmp_path / 'out'}}}\n")
    assert main(["run", str(config)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_set_override_errors_exit_2(tmp_path, capsys) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("input: {path: corpus/}\noutput: {path: out/}\n")
    assert main(["run", str(config), "--set", "resources.gpus_per_actor=-1"]) == 2
    assert "resources.gpus_per_actor" in capsys.readouterr().err


def test_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "status" in out and "embed" in out
