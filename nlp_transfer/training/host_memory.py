"""Large CPU tensors kept in the malloc heap while a run trains (``train.heap_allocations``).

glibc serves every allocation above its mmap threshold (32 MB at most) with a fresh ``mmap`` and
unmaps it on free. A full fine-tune frees and re-allocates its word-embedding gradient every step
(vocab x hidden floats: 47 MB for MiniLM), so every step the kernel zero-fills ~12,000 new pages
(13.3k minor page faults a step measured on MiniLM, 1.6k with this on; benchmarks/levers.py
``heap_allocations``). ``mallopt(M_MMAP_MAX, 0)`` serves large blocks from the heap and a high
``M_TRIM_THRESHOLD`` keeps the freed heap for the next step; both are put back afterwards and the
kept memory is returned with ``malloc_trim(0)``.

Why by hand: PyTorch has no caching allocator for CPU tensors (CUDA has one), and jemalloc or
tcmalloc only help when preloaded (``LD_PRELOAD``) before the process starts, which neither the
Python API nor ``accelerate launch`` can do for the user.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
from contextlib import contextmanager
from typing import Iterator

#: glibc's mallopt parameters (malloc.h) and their defaults.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
#: Freed heap kept for reuse while training (a step's transient tensors fit many times over).
KEPT_BYTES = 1 << 30


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc with ``mallopt`` (Linux); None elsewhere (macOS, musl, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def heap_allocations(enabled: bool) -> Iterator[bool]:
    """Within the block, large allocations come from the heap and freed memory stays there.
    Yields whether it is in force (False when disabled or not on glibc)."""
    libc = glibc() if enabled else None
    if libc is None:
        yield False
        return
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEPT_BYTES) == 1
    try:
        yield ok
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
