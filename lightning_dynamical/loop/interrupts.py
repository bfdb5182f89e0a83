"""What to say when a run is stopped by Ctrl-C or SIGTERM: the last round checkpoint and the command that resumes."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_dynamical.reporting.console import end_progress_bar, say

_command: list[str] | None = None


def set_command(command: Sequence[str] | None) -> None:
    """The CLI records its command line here (``None`` clears it); a resume hint repeats it with ``--ckpt_path``."""
    global _command
    if command is None:
        _command = None
        return
    kept: list[str] = []
    skip = False
    for arg in command:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    _command = kept


def resume_hint(checkpoint: str) -> str:
    """The exact command (CLI) or call (Python) that resumes from ``checkpoint``."""
    if _command is not None:
        return shlex.join([*_command, "--ckpt_path", checkpoint])
    return f"trainer.fit(model, datamodule=datamodule, ckpt_path={checkpoint!r})"


def interrupt_message(exception: BaseException, round: int, checkpoint: str | None) -> str | None:
    """The message for an interrupted round, or ``None`` if ``exception`` is not an interrupt."""
    if isinstance(exception, KeyboardInterrupt):
        what = "interrupted (Ctrl-C)"
    elif isinstance(exception, SIGTERMException):
        what = "stopped by SIGTERM"
    else:
        return None
    if checkpoint is None:
        return (f"[active learning] {what} in round {round}, before any round checkpoint was saved; "
                "run the same command again to start over")
    return (f"[active learning] {what} in round {round}. Last round checkpoint: {checkpoint}\n"
            f"Resume with: {resume_hint(checkpoint)}")


def announce_interrupt(trainer: Trainer, model: LightningModule, exception: BaseException, round: int,
                       checkpoint: str | None) -> None:
    """Say :func:`interrupt_message` (below any progress bar) when ``exception`` is an interrupt."""
    message = interrupt_message(exception, round, checkpoint)
    if message is not None:
        end_progress_bar(trainer, model)
        say(message)
