"""Peak memory of a piece of work as the operating system sees it: the peak resident set size (RSS) while it runs,
above the resident size just before (Linux, glibc).

Resident memory follows the live tensors only when freed memory goes back to the system. The ``vlbridge`` command
keeps it instead (:mod:`vlbridge.allocator`: faster steps), which would hide a step's peak behind the previous
one's. So for the measurement glibc's malloc is set as ``benchmarks/bridge_costs.py`` sets its memory probe: chunks
of 64 KiB and more are mapped on their own and unmapped when freed, the heap's free top is trimmed at once, and the
free memory already held is handed back (``malloc_trim``) before the peak is reset (``/proc/self/clear_refs``).
Afterwards malloc is set back to keeping freed memory, as the ``vlbridge`` command runs.
"""

from __future__ import annotations

import ctypes
import gc
import platform
import re
from pathlib import Path

from vlbridge.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory

RELEASE_MMAP_THRESHOLD = 64 * 1024  # bytes: larger chunks are mapped on their own and unmapped when freed
METHOD = ("peak resident set size (Linux VmHWM) above the resident size just before, with glibc malloc set to "
          "return freed memory to the system during the measurement (vlbridge.report.memory)")


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def supported() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and Path("/proc/self/clear_refs").exists()


def peak_rss_above_current(fn) -> float | None:
    """MB by which the resident set grows at its peak while ``fn()`` runs; None where it cannot be measured
    (not Linux with glibc)."""
    if not supported():
        fn()
        return None
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, RELEASE_MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, 0)
    try:
        gc.collect()
        libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current resident size
        before = _status_kb("VmRSS")
        fn()
        return max(0, _status_kb("VmHWM") - before) / 1024
    finally:
        keep_freed_memory()
