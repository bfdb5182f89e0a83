"""Pool-scoring wall time with 1 and N DDP processes on CPU (gloo), same model, pool and engine.

    python benchmarks/ddp_scoring.py --devices 1,2 --pool 8000 --engine func

Each configuration runs ``ActiveLearningLoop`` for two query rounds in a fresh process (the ``ddp``
launcher re-executes this script) and reads the second round's ``score_seconds`` from ``al_rounds.csv``
(the first includes one-off warm-up) and prints a markdown
table plus a JSON line. Threads are split evenly: a run with N processes gives each ``cores // N`` threads.
Uses real MNIST from ``--root`` when present, else scikit-learn digits tiled to ``--pool``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    import lightning as L
    from torch.utils.data import Subset, TensorDataset

    from lightning_dynamical import ActiveLearningDataModule, ActiveLearningLoop, Classifier, DynamicAL
    from lightning_dynamical.models import CifarCNN

    L.seed_everything(0)
    raw = Path(args.root) / "MNIST" / "raw"
    if raw.exists():
        from lightning_dynamical.data.mnist import build_mnist

        splits = build_mnist(args.root)
        pool, test = Subset(splits.pool_eval, range(args.pool)), Subset(splits.test, range(500))
        channels = 1
    else:
        from lightning_dynamical.data.digits import build_digits

        d = build_digits().pool
        reps = -(-args.pool // len(d))
        x, y = d.tensors[0].repeat(reps, 1, 1, 1)[: args.pool], d.tensors[1].repeat(reps)[: args.pool]
        pool, test, channels = TensorDataset(x, y), TensorDataset(x[:500], y[:500]), 1
    dm = ActiveLearningDataModule(pool, test=test, initial_size=200, batch_size=64, eval_batch_size=args.batch_size)
    loop = ActiveLearningLoop(DynamicAL(engine=args.engine), query_size=100, rounds=2, max_epochs_per_round=1,
                              dirpath=args.out, save_round_checkpoints=False, verbose=False)
    trainer = L.Trainer(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                        max_epochs=-1, callbacks=[loop], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=args.out)
    trainer.fit(Classifier(CifarCNN(in_channels=channels)), datamodule=dm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1,2", help="comma-separated process counts")
    parser.add_argument("--pool", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.devices = int(args.devices)
        worker(args)
        return
    cores = os.cpu_count() or 1
    results = []
    for n in [int(d) for d in args.devices.split(",")]:
        with tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // n))}
            cmd = [sys.executable, __file__, "--worker", "--devices", str(n), "--pool", str(args.pool),
                   "--batch-size", str(args.batch_size), "--engine", args.engine, "--root", args.root, "--out", out]
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            row = list(csv.DictReader(open(Path(out) / "al_rounds.csv")))[1]
            results.append({"processes": n, "threads_each": max(1, cores // n), "pool": int(row["pool"]),
                            "score_seconds": float(row["score_seconds"])})
    base = results[0]["score_seconds"]
    print("| processes | threads each | pool | scoring s | speed-up |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['processes']} | {r['threads_each']} | {r['pool']} | {r['score_seconds']:.2f} | "
              f"{base / r['score_seconds']:.2f}x |")
    print(json.dumps({"benchmark": "ddp_scoring", "engine": args.engine, "results": results}))


if __name__ == "__main__":
    main()
