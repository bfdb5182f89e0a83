"""The active-learning loop: ``ActiveLearningLoop`` (a Lightning callback) and the parts it orchestrates.

One round: :mod:`.convergence` says when training on the labeled set has converged, :mod:`.evaluator` measures
the model, :mod:`.pool_scorer` runs the strategy over the pool (sharded under DDP via :mod:`.distributed`),
:mod:`.labeling` brings the oracle's labels into the labeled split (:mod:`.pending` when people label later),
:mod:`.stopping` decides whether to query again, :mod:`.train_loader` rebuilds the training loader, and
:mod:`.interrupts` says how to resume a stopped run.
"""
