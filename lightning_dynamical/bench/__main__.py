"""``python -m lightning_dynamical.bench``: the bench command line."""

from lightning_dynamical.bench.command import main

main()
