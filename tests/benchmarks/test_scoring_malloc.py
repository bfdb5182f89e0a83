"""``benchmarks/scoring.py --malloc pinned``: a block below 32 MiB comes from the heap, and the heap keeps it after it
is freed, so a workload's large temporaries do not page-fault on every use whatever the process freed before (glibc's
default thresholds follow the history of frees)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

BLOCK = """
import ctypes, sys, torch
sys.path.insert(0, {path!r})
import scoring
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
pinned = {pinned} and scoring.pin_malloc()
before = libc.mallinfo2()
x = torch.ones(31 * 2**18)  # 31 MiB
mapped = libc.mallinfo2().hblkhd - before.hblkhd
del x
print(pinned, mapped // 2**20, (libc.mallinfo2().arena - before.arena) // 2**20)
"""


def block(pinned: bool) -> tuple[str, int, int]:
    """In a fresh interpreter: whether pinned, the MiB a 31 MiB tensor took as a fresh mapping, and the MiB the heap
    grew by and kept after it was freed."""
    done = subprocess.run([sys.executable, "-c", BLOCK.format(path=str(BENCHMARKS), pinned=pinned)],
                          capture_output=True, text=True, timeout=120, check=True)
    flag, mapped, heap = done.stdout.split()
    return flag, int(mapped), int(heap)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
                    or tuple(map(int, platform.libc_ver()[1].split(".")[:2])) < (2, 33), reason="glibc's mallinfo2")
def test_pinned_malloc_keeps_large_blocks_on_the_heap() -> None:
    flag, mapped, kept = block(True)
    assert (flag, mapped) == ("True", 0) and kept >= 30
    flag, mapped, kept = block(False)
    assert (flag, mapped, kept) == ("False", 31, 0)  # by default a fresh mapping, returned to the system when freed
