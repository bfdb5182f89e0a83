"""Older saved formats brought up to today's, so runs saved by earlier versions still resume.

The loop before it was split into parts (commit a374e385, 2026-11-25, "v0") saved less than today's: its rows,
loop state and ``al_state.json`` lack fields that today's code reads. Each function here takes a state as it was
read, returns it in today's format as a new dict (the argument is left as it is) and returns today's format
unchanged, so load paths call it on whatever they read. The ``ActiveLearningDataModule`` state and the RNG state
(``torch``, ``python``, ``cuda``) are saved as they were then, and ``al_rounds.csv`` is only written, never read
back (a resumed run rewrites it from the migrated ``history``, with today's columns), so none of them has a
function here.
"""

from __future__ import annotations

import math
from typing import Any

ROW_DEFAULTS: dict[str, Any] = {"train_loss": math.nan, "train_acc": math.nan, "stopped_by": "", "converged_by": "",
                                "smoothed_loss": math.nan, "query_sqnorm_median": math.nan,
                                "query_dot_median": math.nan, "query_dot_ratio_median": math.nan,
                                "query_approximation_ratio": math.nan}
"""What an older round row lacks: ``train_loss`` and ``train_acc`` (not measured in v0: NaN, as for an unmeasured
``test_acc``), ``stopped_by`` (no stopping criteria in v0: ""), and what v1 did not record: ``converged_by`` ("")
and ``smoothed_loss`` (NaN) of the fit-and-settled rule, and the query regime ``query_*`` (NaN). Rows from before
tasks (classification only) get ``metric="acc"`` and ``test_metric``/``train_metric`` equal to their accuracies
(:func:`migrate_row`)."""


CONVERGENCE_DEFAULTS: dict[str, Any] = {"fit_streak": 0, "ended_by": "", "last_accuracy": math.nan}
"""What a v0 or v1 :class:`~lightning_dynamical.loop.convergence.Convergence` state lacks."""


def migrate_row(row: dict[str, Any]) -> dict[str, Any]:
    """A round's row (``history``, the paused round's): the :data:`ROW_DEFAULTS` it lacks added after its own keys.

    v0 rows are ``round, labeled, pool, test_acc, score_seconds, epochs``; today's add ``train_loss, train_acc,
    stopped_by`` (v1), ``converged_by, smoothed_loss, query_*`` (v2) and ``metric, test_metric, train_metric`` (v3,
    tasks) in that order.
    """
    migrated = {**row, **{key: value for key, value in ROW_DEFAULTS.items() if key not in row}}
    if "metric" not in row:
        migrated.update(metric="acc", test_metric=migrated.get("test_acc", math.nan),
                        train_metric=migrated["train_acc"])
    return migrated


def migrate_convergence_state(state: dict[str, Any]) -> dict[str, Any]:
    """A :class:`~lightning_dynamical.loop.convergence.Convergence` state.

    v0: ``{epochs, best, wait}``, ``best`` being the best raw epoch loss. Today's adds ``recent`` (the last
    ``smoothing`` epoch losses), ``last_loss`` and ``reason``, and ``best`` is the best *smoothed* loss. A v0
    state gets ``recent=[]``, ``last_loss=nan``, ``reason=""``; one saved within a round (``epochs > 0``) also
    gets ``best=inf, wait=0``: a raw-loss best and its wait count would end the round against a quantity the
    smoothed test does not compare, so the plateau test starts over, while ``epochs`` is kept so
    ``max_epochs_per_round`` still counts the whole round. A state saved at a round's start (every round
    checkpoint) is then exactly what today's code saves there.

    v1 (before the fit-and-settled rule, 2026-12-05) lacks the :data:`CONVERGENCE_DEFAULTS`: the fit streak
    restarts at 0 (the accuracy must hold ``fit_epochs`` epochs from the resumed epoch on).
    """
    migrated = dict(state)
    if "recent" not in state:
        migrated.update(recent=[], last_loss=math.nan, reason="")
        if int(state["epochs"]) > 0:
            migrated.update(best=math.inf, wait=0)
    for key, value in CONVERGENCE_DEFAULTS.items():
        migrated.setdefault(key, value)
    return migrated


def migrate_loop_state(state: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~lightning_dynamical.ActiveLearningLoop` state in a checkpoint.

    v0 -> today: ``history`` rows and ``pending["row"]`` by :func:`migrate_row`; ``convergence`` by
    :func:`migrate_convergence_state`; ``strategy: None`` (v0 saved None for a strategy without state) -> ``{}``
    (what such a strategy's ``state_dict`` returns today); ``stopping`` (no criteria in v0) -> ``{}``; ``rescore``
    (v3: the checkpoint a run saves when its pool scores are not finite, to score that round again) -> ``False``;
    ``epoch_loss`` (an epoch's loss taken before its end, for a checkpoint saved at validation) and ``dirpath`` (the
    run's records folder, where a resume continues them) -> ``None``.
    ``round``, ``finished``, ``rng`` and the rest of ``pending`` (``metrics, indices, scores, pseudo_labels``)
    are unchanged.
    """
    migrated = {**state, "history": [migrate_row(row) for row in state["history"]]}
    if state.get("convergence") is not None:
        migrated["convergence"] = migrate_convergence_state(state["convergence"])
    pending = state.get("pending")
    if pending is not None:
        migrated["pending"] = {**pending, "row": migrate_row(pending["row"])}
    if migrated.get("strategy") is None:
        migrated["strategy"] = {}
    migrated.setdefault("stopping", {})
    migrated.setdefault("rescore", False)
    migrated.setdefault("epoch_loss", None)
    migrated.setdefault("dirpath", None)
    return migrated


def migrate_records_state(state: dict[str, Any]) -> dict[str, Any]:
    """An ``al_state.json``.

    v0: ``round, dataset_size, labeled, given_labels, history, strategy, seed``. Today's adds ``stopping`` (no
    criteria in v0: ``{}``) and ``weights``, the checkpoint to continue from: ``None``, since v0 named none and
    rebuilt only the labeled split from this file (the model keeps its weights, and resuming says so).
    ``history`` rows by :func:`migrate_row`, ``pending_row`` too where present (v0 wrote none).
    """
    migrated = {**state, "history": [migrate_row(row) for row in state.get("history", [])]}
    if migrated.get("pending_row") is not None:
        migrated["pending_row"] = migrate_row(migrated["pending_row"])
    migrated.setdefault("stopping", {})
    migrated.setdefault("weights", None)
    return migrated
