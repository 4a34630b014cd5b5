"""An opt-in, process-wide setting of glibc's allocator that keeps freed memory for reuse.

This module imports neither Keras nor a backend, so a script (or `benchmarks/bench.py`) can
call `tune_allocator` before anything else allocates.
"""

import ctypes
import os
import warnings

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8

#: What `tune_allocator` sets, in order: one arena, no mmap'd chunks, never trim the heap
#: (-1, glibc's "no trimming": the largest threshold mallopt's int could give is 2 GB, less
#: than the 2.2 GB XLA frees after each SwinV2-T training step), grow it 64 MB at a time.
SETTINGS = (
    ("M_ARENA_MAX", M_ARENA_MAX, 1),
    ("M_MMAP_MAX", M_MMAP_MAX, 0),
    ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, -1),
    ("M_TOP_PAD", M_TOP_PAD, 64 << 20),
)


def glibc_version():
    """glibc's version as `(major, minor)`, or None where the C library is not glibc."""
    try:
        name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or no such name (musl, macOS)
        return None
    if name != "glibc":
        return None
    return tuple(int(part) for part in version.split(".")[:2])


def tune_allocator():
    """Keeps the memory that tensors free in the process for the next ones (Linux, glibc).

    By default glibc returns large freed blocks to the kernel: every buffer of more than
    32 MB is a fresh `mmap`, and the top of the heap is trimmed as soon as enough of it is
    free. The next tensor of that size then page-faults in (and the kernel zeroes) every
    page again, on every call. Eager PyTorch allocates each activation anew, and XLA (JAX,
    TensorFlow with `jit_compile`) allocates a step's temporaries as one buffer (2.2 GB for a
    SwinV2-T training step at batch 8), so on a CPU a good part of a step can go to page
    faults. This sets, with glibc's `mallopt`: one malloc arena, no `mmap`'d chunks, no
    trimming (the same as `GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
    glibc.malloc.trim_threshold=...` given before the process starts).

    The cost: the process keeps its peak heap. Freed memory is reused, not returned, so the
    resident memory stays near the largest it has been (a JAX SwinV2-T training loop at batch
    8 measured 3.9 GB without, 6.3 GB with). The setting is process-wide, affects every
    library in the process, and cannot be undone in a useful way; call it first, before
    building models (arenas already created by other threads keep working as they are).
    Measured speed-ups are in docs/performance.md.

    Returns:
        True where the settings were applied; False (with a `RuntimeWarning`) where the C
        library is not glibc (macOS, Windows, musl) or refused a setting.
    """
    if glibc_version() is None:
        warnings.warn(
            "tune_allocator needs glibc (Linux); the allocator is left as it is.", RuntimeWarning, stacklevel=2
        )
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    refused = [name for name, param, value in SETTINGS if mallopt(param, value) != 1]
    if refused:
        warnings.warn(
            f"glibc's mallopt refused {', '.join(refused)}; the allocator is partly tuned.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True
