"""The plugin's console lines: logged to ``lightning_dynamical`` on rank zero, written around live progress bars.

Like Lightning's own logger, ``lightning_dynamical`` gets a handler (standard output) only when the root logger
has none, so applications that configure logging keep control. The handler writes through ``tqdm.write``, which
clears the progress bars, prints the line and redraws them: a round's line never ends up glued to a bar.
"""

from __future__ import annotations

import logging
import sys

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
