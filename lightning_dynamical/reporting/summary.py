"""The end of a run: the per-round table, and where the records, checkpoints, final model and W&B run went."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer

from lightning_dynamical.records import files as records
from lightning_dynamical.records.queries import QUERIES_FILE
from lightning_dynamical.reporting import wandb_runs
from lightning_dynamical.reporting.console import end_progress_bar, say


def report(trainer: Trainer, pl_module: LightningModule, dirpath: str, history: list[dict[str, Any]],
           round_checkpoints: bool, final: str | None = None) -> None:
    """Print the table and :func:`where_written` (rank zero) below the progress bar."""
    if not trainer.is_global_zero:
        return
    end_progress_bar(trainer, pl_module)
    name = _headline(history[-1]) if history else None
    headline = f" test_{name} |" if name else ""
    lines = [f"| round | labeled | test_acc |{headline} epochs | score_s |", "|---" * (5 + bool(name)) + "|"]
    lines += [f"| {r['round']} | {r['labeled']} | {r['test_acc']:.4f} |"
              + (f" {r['test_metric']:.4f} |" if name else "") + f" {r['epochs']} | {r['score_seconds']} |"
              for r in history]
    say("\n".join(lines))
    say(where_written(trainer, dirpath, history, round_checkpoints, final))


def where_written(trainer: Trainer, dirpath: str, history: list[dict[str, Any]], round_checkpoints: bool,
                  final: str | None = None) -> str:
    """A few aligned lines naming every file the run produced (read after ``trainer.fit``'s last round); the final
    model is ``final`` (the loop's ``al_final.ckpt``), else the last checkpoint of the Trainer's ``ModelCheckpoint``."""
    files = [records.ROUNDS_FILE, QUERIES_FILE, records.STATE_FILE]
    lines = ["records       " + ", ".join(records.join(dirpath, name) for name in files
                                         if name != QUERIES_FILE or records.exists(records.join(dirpath, name)))]
    saved = [records.round_checkpoint(dirpath, int(row["round"])) for row in history[:-1]] if round_checkpoints else []
    saved = [path for path in saved if records.exists(path)]
    if saved:
        first, last = saved[0].rsplit("/", 1)[-1], saved[-1].rsplit("/", 1)[-1]
        span = first if first == last else f"{first} .. {last}"
        lines.append(f"checkpoints   {span} in {dirpath}")
    final = final or _final_model(trainer)
    lines.append(f"final model   {final}" if final else "final model   not saved (save_round_checkpoints=False and no "
                 "ModelCheckpoint with save_last)")
    lines += wandb_runs.describe(trainer)
    return "\n".join(["[active learning] written:", *("  " + line for line in lines)])


def _final_model(trainer: Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    return getattr(callback, "last_model_path", "") or None



def round_line(row: dict[str, Any], reason: str) -> str:
    """The line printed when a round ends (``verbose``): the task's headline metric first when it is not accuracy."""
    name = _headline(row)
    headline = f"test_{name}={row['test_metric']:.4f} " if name else ""
    return (f"[active learning] round {row['round']}: labeled={row['labeled']} pool={row['pool']} "
            f"{headline}test_acc={row['test_acc']:.4f} train_loss={row['train_loss']:.4f} "
            f"train_acc={row['train_acc']:.4f} epochs={row['epochs']} ({reason})")


def _headline(row: dict[str, Any]) -> str | None:
    """The row's headline metric name when it is not the accuracy (``"miou"``), else ``None``."""
    name = row.get("metric") or "acc"
    return None if name == "acc" else str(name)
