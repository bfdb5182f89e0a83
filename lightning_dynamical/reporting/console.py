"""The plugin's console lines: logged to ``lightning_dynamical`` on rank zero, written around live progress bars.

Like Lightning's own logger, ``lightning_dynamical`` gets a handler (standard output) only when the root logger
has none, so applications that configure logging keep control. The handler writes through ``tqdm.write``, which
clears the progress bars, prints the line and redraws them: a round's line never ends up glued to a bar.
"""

from __future__ import annotations

import logging
import sys

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from tqdm import tqdm

log = logging.getLogger("lightning_dynamical")


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 - logging must never raise; report like logging.StreamHandler does
            self.handleError(record)


log.setLevel(logging.INFO)
if not logging.getLogger().hasHandlers():
    log.addHandler(_TqdmHandler())
    log.propagate = False


@rank_zero_only
def say(message: str) -> None:
    """One line (or block) for the user, from rank zero only."""
    log.info(message)


def end_progress_bar(trainer: Trainer, pl_module: LightningModule) -> None:
    """End a live progress display (Lightning's rich bar) so that what is printed next comes below it, not above.

    Calls the bar's ``teardown`` hook, which Lightning calls again afterwards (stopping twice is a no-op).
    """
    if trainer.progress_bar_callback is not None:
        trainer.progress_bar_callback.teardown(trainer, pl_module, "fit")
