"""The noise floor of a bench: ``python benchmarks/noise_floor.py MAIN/results.csv OFFSET/results.csv OFFSET``.

``OFFSET/results.csv`` holds the same strategies and seeds as ``MAIN`` run with ``--trainer-seed-offset OFFSET``
(the same initial labeled sets, other weights, shuffles and dropout); prints the paired AULC differences per
strategy as Markdown.
"""

from __future__ import annotations

import sys

from lightning_dynamical.bench.report import noise_floor_markdown
from lightning_dynamical.bench.runs import read_results


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit(__doc__)
    print("\n".join(noise_floor_markdown(read_results(argv[0]), read_results(argv[1]), int(argv[2]))))


if __name__ == "__main__":
    main(sys.argv[1:])
