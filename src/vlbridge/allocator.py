"""Keep freed memory in the process, so that tensors freed in one training step are reused by the next
instead of being handed back to the operating system and page-faulted in again.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc returns a freed chunk above its mmap
threshold to the kernel at once, and trims the heap's free top above its trim threshold; both thresholds
move with the allocation history. A training step that allocates and frees the same multi-megabyte tensors
every step can then page-fault them back every step: the LLaVA-style step on the 135M LM with 256 visual
tokens (batch 8) took 88-198 thousand page faults and 8.3-10.3 s a step, against 0-24 and 7.1-7.2 s with
the settings below (``benchmarks/bridge_costs.py --default-malloc``, BENCHMARKS.md "Bridge costs").
Alternative allocators (jemalloc, tcmalloc), which PyTorch's CPU tuning guide recommends, avoid this by
caching freed memory; for glibc, two ``mallopt`` settings do the same:

- ``M_MMAP_THRESHOLD`` fixed at 32 MiB (the highest value glibc's own adaptive threshold reaches on 64-bit
  systems), so chunks below it come from the heap and are reused;
- ``M_TRIM_THRESHOLD`` at its maximum, so the heap's free top stays mapped for the next step.

The process then keeps its peak heap mapped: resident memory follows the largest step, not the live
tensors. The ``vlbridge`` command and the benchmarks call :func:`keep_freed_memory` once at start; a script
using the library can do the same. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters, glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: never trim in practice


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to keep freed memory for reuse; True when applied, False on other C libraries."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    for parameter, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if libc.mallopt(parameter, value) != 1:
            raise OSError(f"glibc mallopt({parameter}, {value}) was refused")
    return True
