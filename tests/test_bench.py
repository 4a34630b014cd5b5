"""The benchmark's allocator settings and its table (the timed runs live in benchmarks/, not here)."""

import importlib.util
import os
import platform

import pytest

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "bench.py")
_spec = importlib.util.spec_from_file_location("bench", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_default_malloc_keeps_the_environment():
    environ = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0", "X": "1"}
    env = bench.malloc_environment("default", environ)
    assert env == environ and env is not environ


def _glibc_version():
    libc, version = platform.libc_ver()
    return tuple(int(v) for v in version.split(".")[:2]) if libc == "glibc" else None


@pytest.mark.skipif((_glibc_version() or (0,)) < (2, 35), reason="the tuned setting needs glibc >= 2.35")
def test_tuned_malloc_puts_the_tunables_before_the_users():
    env = bench.malloc_environment("tuned", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    # glibc applies tunables left to right: the user's own entry comes last and wins
    assert env["GLIBC_TUNABLES"] == bench.TUNED_MALLOC + ":glibc.malloc.hugetlb=0"
    assert bench.malloc_environment("tuned", {})["GLIBC_TUNABLES"] == bench.TUNED_MALLOC
    # the module docstring (the --help text) spells out the same string
    assert bench.TUNED_MALLOC in "".join(bench.__doc__.split())


def test_unknown_malloc_setting_is_refused():
    with pytest.raises(ValueError, match="--malloc must be one of"):
        bench.malloc_environment("jemalloc", {})


def test_table_has_one_row_per_malloc_setting():
    rows = [
        dict(model="t", mode="train", dtype="float32", malloc="default", impl="keras-jax", images_per_s=2.0),
        dict(model="t", mode="train", dtype="float32", malloc="tuned", impl="keras-jax", images_per_s=3.0),
        dict(model="t", mode="train", dtype="float32", malloc="tuned", impl="hf-torch", error="boom"),
    ]
    lines = bench.markdown_table(rows).splitlines()
    assert lines[0] == "| model | mode | dtype | malloc | keras-jax | hf-torch |"
    assert lines[2:] == ["| t | train | float32 | default | 2.00 |  |", "| t | train | float32 | tuned | 3.00 | n/a |"]


_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model\t\t: {model}
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 {extra}

processor\t: 1
model name\t: another entry, ignored
flags\t\t: amx_bf16
"""


def test_cpu_description_tells_a_zen3_from_a_zen4():
    zen3 = bench.cpu_description(_CPUINFO.format(family=25, model=1, extra="vaes"))
    zen4 = bench.cpu_description(_CPUINFO.format(family=25, model=17, extra="avx512f avx512_vnni avx512_bf16"))
    assert zen3 == dict(name="AMD EPYC", family="25", model="1", isa=["avx2", "fma"])
    assert zen4["model"] == "17"
    assert zen4["isa"] == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert "no bfloat16 instructions" in bench.describe_cpu(zen3)
    assert bench.describe_cpu(zen4) == ("CPU: AMD EPYC (family 25, model 17): avx2 fma avx512f avx512_vnni avx512_bf16")
    assert bench.describe_cpu(None).startswith("CPU: unknown")


def test_ratio_table_compares_with_the_fastest_peer_of_each_group():
    rows = [
        dict(model="t", mode="inference", dtype="float32", malloc="default", impl="keras-jax", images_per_s=10.0),
        dict(model="t", mode="inference", dtype="float32", malloc="default", impl="keras-torch", images_per_s=7.0),
        dict(model="t", mode="inference", dtype="float32", malloc="default", impl="hf-torch", images_per_s=6.0),
        dict(model="t", mode="inference", dtype="float32", malloc="default", impl="hf-torch-compile", images_per_s=8.0),
        dict(model="t", mode="train", dtype="float32", malloc="default", impl="keras-jax", images_per_s=3.0),
        dict(model="t", mode="train", dtype="float32", malloc="default", impl="hf-torch", error="boom"),
    ]
    lines = bench.ratio_table(rows).splitlines()
    assert lines[0] == "| model | mode | dtype | malloc | keras-jax | keras-torch | fastest peer | best | all |"
    # 10 / 8 meets the 1.25x inference target; 7 / 8 misses the 0.9x floor. No peer ran in training.
    assert lines[2:] == [
        "| t | inference | float32 | default | 1.25x | 0.88x | hf-torch-compile | 1.25x >= 1.25 | 0.88x < 0.9 |"
    ]
    assert bench.ratio_table(rows[4:]) == ""


def test_mallopt_setting_marks_the_workers_and_nothing_else():
    env = bench.malloc_environment("mallopt", {"X": "1"})
    assert env == {"X": "1", bench.MALLOPT_VARIABLE: "1"}
    # a marker inherited from the caller's environment does not leak into the other settings
    assert bench.MALLOPT_VARIABLE not in bench.malloc_environment("default", env)
