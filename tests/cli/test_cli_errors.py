"""Bad configs through the CLI: one short message naming the argument or file, no traceback unless asked, and
no files left behind (the checks run before any logger starts). Also the ``doc`` command and ``--data.help``."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import pytest

from lightning_dynamical.cli import app as cli

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "configs" / "digits.yaml")


@pytest.fixture(autouse=True)
def cli_argv(monkeypatch):
    """``main(args)`` in-process: pytest's own command line must not look like CLI arguments."""
    monkeypatch.setattr(sys, "argv", ["lightning-dynamical"])
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """Run the CLI in-process from an empty folder; restore what its quiet mode changes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    levels = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "lightning.fabric")}
    with warnings.catch_warnings():
        yield tmp_path
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _fail(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def _digits(tmp_path: Path, *overrides: str) -> list[str]:
    return ["fit", "--config", DIGITS, f"--trainer.default_root_dir={tmp_path / 'run'}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'run'}", *overrides]


@pytest.mark.parametrize("override, message", [
    ("--trainer.callbacks.init_args.query_size=0", "error: query_size must be a positive int (>= 1), got 0"),
    ("--trainer.callbacks.init_args.max_epochs_per_round=0",
     "error: max_epochs_per_round must be a positive int (>= 1), got 0"),
    ("--trainer.callbacks.init_args.query_size=5000",
     "error: query_size=5000 is larger than the unlabeled pool of 1300"),
    ("--data.init_args.initial_size=0", "error: initial_size must be a positive int (>= 1), got 0"),
])
def test_bad_value_is_one_line_and_leaves_no_files(cli_env, capsys, override, message):
    err = _fail(_digits(cli_env, override), capsys)
    assert err.splitlines() == [f"{message}  (--debug shows the traceback)"]
    assert list(cli_env.iterdir()) == []


def test_misspelled_option_names_the_key_and_a_guess(cli_env, capsys):
    err = _fail(_digits(cli_env, "--trainer.callbacks.init_args.querysize=10"), capsys)
    assert err.splitlines() == ["error: trainer.callbacks: lightning_dynamical.ActiveLearningLoop has no option "
                                "'querysize'; did you mean 'query_size'? (lightning-dynamical doc "
                                "ActiveLearningLoop lists them)"]
    assert list(cli_env.iterdir()) == []


def test_other_parse_errors_point_to_the_help(cli_env, capsys):
    err = _fail(["fit", "--config", str(cli_env / "missing.yaml")], capsys)
    assert err.splitlines() == [f"error: Parser key \"config\": File does not exist: '{cli_env / 'missing.yaml'}'",
                                "(options: lightning-dynamical fit --help; active learning: lightning-dynamical doc)"]


def test_missing_data_root_names_the_path(cli_env, capsys):
    missing = cli_env / "no-such-folder"
    err = _fail(["fit", "--config", str(ROOT / "configs" / "mnist_cnn.yaml"), f"--data.init_args.root={missing}",
                 f"--trainer.default_root_dir={cli_env / 'run'}", "--trainer.logger=false"], capsys)
    assert len(err.splitlines()) == 1
    assert f"MNIST not found: data root '{missing}'" in err and "does not exist" in err and "download: true" in err
    assert list(cli_env.iterdir()) == []


@pytest.mark.parametrize("state, message", [
    ({"round": 1, "dataset_size": 1400, "labeled": [3, 7, 7, 9, 3]}, "'labeled' repeats the indices [3, 7]"),
    ({"round": "two", "dataset_size": 1400, "labeled": [3]}, "'round' must be an int >= 0, got 'two'"),
    ({"round": 1, "dataset_size": 99, "labeled": [3]}, "does not fit this pool: state is for a pool of 99 samples"),
])
def test_bad_state_file_names_the_file_and_field(cli_env, capsys, state, message):
    path = cli_env / "al_state.json"
    path.write_text(json.dumps(state))
    err = _fail(_digits(cli_env, f"--trainer.callbacks.init_args.resume_from_state={path}"), capsys)
    assert len(err.splitlines()) == 1
    assert f"state file {path}" in err and message in err
    assert [p.name for p in cli_env.iterdir()] == ["al_state.json"]


def test_missing_checkpoint_is_named(cli_env, capsys):
    err = _fail(_digits(cli_env, "--ckpt_path=nowhere/al_round_3.ckpt"), capsys)
    assert err.splitlines() == ["error: ckpt_path 'nowhere/al_round_3.ckpt' does not exist  (--debug shows the "
                                "traceback)"]


def test_debug_shows_the_traceback(cli_env):
    with pytest.raises(ValueError, match="Does not validate") as info:
        cli.main(_digits(cli_env, "--trainer.callbacks.init_args.query_size=0", "--debug"))
    assert isinstance(cli.config_error(info.value), cli.ConfigError)


def test_doc_lists_loop_options_with_descriptions(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["doc"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "--trainer.callbacks.init_args.query_size QUERY_SIZE" in out and "samples labeled per round (b)" in out
    assert "DynamicAL, Random" in out and "DigitsDataModule" in out


@pytest.mark.parametrize("args", [["doc", "DynamicAL"], ["fit", "--trainer.callbacks.strategy.help", "DynamicAL"],
                                  ["fit", "--trainer.callbacks.init_args.strategy.help=lightning_dynamical.DynamicAL"]])
def test_strategy_options(capsys, args):
    with pytest.raises(SystemExit) as done:
        cli.main(args)
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "--trainer.callbacks.init_args.strategy.init_args.gamma GAMMA" in out
    assert "weight of the training-dynamics term" in out


def test_data_help_is_short_and_described(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--data.help", "lightning_dynamical.data.DigitsDataModule"])
    out = capsys.readouterr().out
    assert "torch.utils.data" not in out and "--data.pool" not in out
    assert "size of the initial labeled set (M)" in out and len(out.splitlines()) < 40


def test_own_module_in_the_current_directory_is_importable(cli_env, capsys):
    (cli_env / "mymodule.py").write_text(
        "from torch import nn\n\n\nclass MyNet(nn.Sequential):\n"
        "    def __init__(self, num_classes: int = 10) -> None:\n"
        "        super().__init__(nn.Flatten(), nn.Linear(64, num_classes))\n")
    with pytest.raises(SystemExit) as done:
        cli.main(["fit", "--config", DIGITS, "--model.init_args.net=mymodule.MyNet", "--print_config"])
    assert done.value.code == 0
    assert "class_path: mymodule.MyNet" in capsys.readouterr().out
    sys.modules.pop("mymodule", None)
