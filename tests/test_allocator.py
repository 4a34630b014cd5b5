"""keras_swinv2.tune_allocator: glibc keeps freed memory for the next allocation (each check in a
fresh process: the setting is process-wide). Backend-independent: runs on the TensorFlow pass."""

import os
import subprocess
import sys

import keras
import pytest

from keras_swinv2 import allocator

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="backend-independent, runs once")

# Allocates (glibc's malloc), touches and frees 64 MB twice, then prints the minor page faults
# of a third time. (Not numpy: it asks for transparent huge pages for large arrays.)
_SCRIPT = """
import ctypes, importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
if sys.argv[2] == "tuned":
    assert allocator.tune_allocator() is True
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pointer = libc.malloc(64 << 20)
    ctypes.memset(pointer, 1, 64 << 20)
    libc.free(pointer)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(); faults()
print(faults())
"""


def _faults(setting):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, allocator.__file__, setting],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(allocator.glibc_version() is None, reason="glibc's allocator only")
def test_tuned_allocator_reuses_freed_memory_without_page_faults():
    # glibc's default maps a 64 MB block afresh each time: 16k pages faulted in again
    assert _faults("default") > 10_000
    assert _faults("tuned") < 500


# Frees a 2.25 GB block (XLA frees 2.2 GB after each SwinV2-T training step) and prints the
# heap's size before and after, in bytes (mallinfo2, glibc >= 2.33); touches one page only.
_TRIM_SCRIPT = """
import ctypes, importlib.util, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
assert allocator.tune_allocator() is True
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
pointer = libc.malloc((2 << 30) + (256 << 20))
ctypes.memset(pointer, 1, 4096)
before = libc.mallinfo2().arena
libc.free(pointer)
print(before, libc.mallinfo2().arena)
"""


@pytest.mark.skipif((allocator.glibc_version() or (0,)) < (2, 33), reason="mallinfo2 needs glibc >= 2.33")
def test_tuned_allocator_keeps_a_freed_block_larger_than_2_gb():
    # from the heap, not a mapping of its own; and not trimmed when freed (a trim threshold of
    # 2**31 - 1, the largest positive one, would return it)
    out = subprocess.run(
        [sys.executable, "-c", _TRIM_SCRIPT, allocator.__file__],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    before, after = (int(v) for v in out.stdout.split())
    assert before > 2 << 30
    assert after == before


def test_without_glibc_it_warns_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "glibc_version", lambda: None)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: pytest.fail("mallopt must not be called"))
    with pytest.warns(RuntimeWarning, match="needs glibc"):
        assert allocator.tune_allocator() is False


def test_glibc_version_is_read_from_the_c_library():
    version = allocator.glibc_version()
    assert version is None or (isinstance(version, tuple) and version >= (2, 0))
