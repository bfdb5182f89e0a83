"""``lightning-dynamical``: LightningCLI for active-learning runs configured in YAML.

The console stays quiet (progress bars, one line per round, the final table and where everything went), a
:class:`~lightning_dynamical.errors.ConfigError` ends the command in one line (``--debug`` or
``LIGHTNING_DYNAMICAL_DEBUG=1`` shows the traceback and Lightning's own messages), and ``doc`` shows the
active-learning options.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import re
import signal
import sys
import warnings
from typing import Any, NoReturn

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_dynamical.cli import resume
from lightning_dynamical.cli.preflight import check_fit
from lightning_dynamical.errors import ConfigError
from lightning_dynamical.loop import interrupts

PROG = "lightning-dynamical"
DEBUG_ENV = "LIGHTNING_DYNAMICAL_DEBUG"
FIT_EPILOG = (f"The active-learning options (ActiveLearningLoop under trainer.callbacks, strategies, oracles, data "
              f"sets) and their descriptions: {PROG} doc [NAME]. Add --debug for tracebacks.")
_CKPT_KEYWORDS = ("last", "best", "hpc", "registry")


def default_wandb_offline() -> None:
    """Log to W&B offline unless the user configured W&B (a mode, an API key or a login)."""
    if "WANDB_MODE" in os.environ or "WANDB_API_KEY" in os.environ:
        return
    netrc = os.path.expanduser("~/.netrc")
    if os.path.exists(netrc) and "api.wandb.ai" in open(netrc).read():
        return
    os.environ["WANDB_MODE"] = "offline"


def debug_mode() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


class ActiveLearningArgumentParser(LightningArgumentParser):
    """A one-line usage; a rejected option ends the command with one line naming it (jsonargparse's full message,
    usage and tip with ``--debug``)."""

    def format_usage(self) -> str:
        prog = self.prog.replace(" [options]", "")
        return f"usage: {prog} --config CONFIG [--KEY VALUE ...]\n"

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if debug_mode() or not self.exit_on_error or callable(getattr(self, "_error_handler", None)):
            super().error(message, ex)
        short = condense(message)
        if short == message:
            short += f"\n(options: {self.prog.replace(' [options]', '')} --help; active learning: {PROG} doc)"
        sys.stderr.write(f"error: {short}\n")
        self.exit(2)


class ActiveLearningCLI(LightningCLI):
    """LightningCLI with any LightningModule and DataModule selectable by ``class_path``.

    Before ``fit`` starts a logger, :func:`~lightning_dynamical.cli.preflight.check_fit` validates the data and the
    resume files, and :func:`~lightning_dynamical.cli.resume.prepare` links W&B runs and model checkpoints to the run
    a checkpoint came from.
    """

    def before_fit(self) -> None:
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        ckpt_path = None if ckpt_path in _CKPT_KEYWORDS else ckpt_path
        check_fit(self.trainer, self.datamodule, ckpt_path)
        resume.prepare(self.trainer, ckpt_path)


def run(args: list[str] | None = None) -> ActiveLearningCLI:
    """Build and run the CLI; returns it (for tests and notebooks)."""
    default_wandb_offline()
    if not debug_mode():
        quiet()
    interrupts.set_command([PROG, *(sys.argv[1:] if args is None else args)])
    try:
        return ActiveLearningCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_class=ActiveLearningArgumentParser,
            parser_kwargs={"fit": {"epilog": FIT_EPILOG}},
            args=args,
        )
    finally:
        interrupts.set_command(None)


def quiet() -> None:
    """Keep Lightning's and W&B's start-up chatter (device lines, tips, banners) off the console.

    Lightning's info messages go to its loggers, so raising their level hides them and keeps its warnings;
    the plugin prints where the W&B run went itself. torch 2.14 deprecates ``LeafSpec``, which Lightning 2.6
    still builds for every loader: that FutureWarning is Lightning's to fix, so it alone is silenced.
    """
    os.environ.setdefault("WANDB_SILENT", "true")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-dynamical`` console script (``fit``, ``validate``, ``test``, ``doc``, ``label``).

    ``label ...`` (``label import <csv> --state <al_state.json>``) is handed to
    :mod:`lightning_dynamical.oracles.files`, ``doc [NAME]`` to :mod:`lightning_dynamical.cli.doc`; both exit with
    their status. ``--debug`` anywhere sets ``LIGHTNING_DYNAMICAL_DEBUG=1`` (kept by DDP's child processes).
    """
    from lightning_dynamical.cli import doc

    argv = list(sys.argv[1:] if args is None else args)
    if "--debug" in argv:
        os.environ[DEBUG_ENV] = "1"
        argv = [a for a in argv if a != "--debug"]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # class_path: mymodule.MyModel works from the config's directory
    if argv and argv[0] == "label":
        from lightning_dynamical.oracles.files import main as label_main

        raise SystemExit(label_main(argv[1:]))
    if argv and argv[0] == "doc":
        raise SystemExit(doc.main(argv[1:]))
    wanted = doc.help_request(argv)
    if wanted is not None:
        raise SystemExit(doc.main(wanted))
    if args is None:
        sys.argv[1:] = argv  # LightningCLI (and DDP's launcher) read sys.argv
    try:
        run(None if args is None else argv)
    except SIGTERMException:
        raise SystemExit(128 + signal.SIGTERM) from None  # Lightning's SIGTERMException would exit with status 0
    except Exception as err:
        problem = config_error(err)
        if problem is None or debug_mode():
            raise
        print(f"error: {problem}  (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def config_error(err: BaseException) -> ConfigError | None:
    """The plugin's own validation error behind ``err`` (jsonargparse and Lightning wrap it), if there is one."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConfigError):
            return current
        stack += [current.__cause__, current.__context__]
    return None


def condense(message: str) -> str:
    """jsonargparse's message for a rejected option, reduced to the key, the class and the option (with a guess).

    Other messages are returned as they are.
    """
    key = re.match(r'Parser key "([^"]+)"', message)
    problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", message)
    if key is None or problem is None:
        return message
    path, detail = problem.group(1), problem.group(2).strip()
    option = re.match(r"Option '([^']+)' is not accepted", detail) or re.match(r"Key '([^']+)' is not expected",
                                                                                  detail)
    if option is None:
        return f"{key.group(1)}: {path}: {detail}"
    given = option.group(1)
    accepted = _init_arguments(path)
    guess = difflib.get_close_matches(given, accepted, n=1)
    hint = f"; did you mean {guess[0]!r}?" if guess else f"; accepted: {', '.join(accepted)}" if accepted else ""
    return f"{key.group(1)}: {path} has no option {given!r}{hint} ({PROG} doc {path.rsplit('.', 1)[-1]} lists them)"


def _init_arguments(path: str) -> list[str]:
    """The keyword arguments a class accepts, following ``**kwargs`` up its bases."""
    module, _, name = path.rpartition(".")
    try:
        cls: Any = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        names += [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


if __name__ == "__main__":
    main()
