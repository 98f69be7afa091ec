"""vlbridge.allocator: freed blocks stay in the process for reuse (glibc), checked through mallinfo2.

Each case runs in a fresh interpreter: malloc's thresholds are process-wide and move with its history."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from vlbridge import allocator

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")

PROBE = """
import ctypes, json, sys, torch
from vlbridge.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2, all size_t
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
torch.ones(1)  # torch's own first allocations, before the measured one
before = libc.mallinfo2()
block = libc.malloc(20 * 2**20)  # what a 20 MB tensor asks glibc for, nothing allocated after it
ctypes.memset(block, 1, 20 * 2**20)
alive = libc.mallinfo2()
libc.free(block)
freed = libc.mallinfo2()
print(json.dumps({"applied": applied, "mmapped_mb": (alive.hblkhd - before.hblkhd) / 2**20,
                  "heap_alive_mb": alive.arena / 2**20, "heap_freed_mb": freed.arena / 2**20}))
"""


def probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@glibc_only
def test_a_freed_tensor_stays_mapped_for_the_next_step():
    kept = probe("keep")
    assert kept["applied"] is True
    assert kept["mmapped_mb"] < 1  # from the heap, not a mapping of its own that free() unmaps
    assert kept["heap_alive_mb"] >= 20
    assert kept["heap_freed_mb"] >= kept["heap_alive_mb"] - 1  # free() did not trim the heap


@glibc_only
def test_glibc_defaults_would_unmap_it():
    """The control: without the settings the same block gets its own mapping, returned to the OS on free."""
    default = probe("default")
    assert default["mmapped_mb"] >= 20


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(allocator.ctypes, "CDLL", None)  # must not be reached
    assert allocator.keep_freed_memory() is False
