"""What a person reads: console lines (:mod:`.console`), the end-of-run summary (:mod:`.summary`), charts for
loggers that take them (:mod:`.charts`), W&B run grouping (:mod:`.wandb_runs`) and per-round wall time
(:mod:`.clock`)."""
