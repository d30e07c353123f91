"""The torch-free kernel library on its own: per-path compile flags from the feature model, no
weak symbols shared between paths, the C++ selftest on every path, and the aarch64 cross build
(scalar path) run under qemu. scripts/check_kernel_lib.py does the work."""
import os
import shutil
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "check_kernel_lib.py")


def _check(tmp_path, *args):
    r = subprocess.run([sys.executable, SCRIPT, "--build-dir", str(tmp_path), *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_native_kernel_library(tmp_path):
    out = _check(tmp_path, "--no-cross")
    import qkernels
    for path in qkernels.supported_cpu_paths():
        assert f"selftest: path {path} ok" in out
    assert "each TU compiled with exactly its features' flags" in out and "no weak or unique symbols" in out
    assert "microkernel instances, accumulators in registers" in out


def _script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("check_kernel_lib", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# The hot loop of a 1x2 int8 tile as objdump prints it: accumulators in registers, and the same
# loop with its accumulators on the stack (loaded and stored around each vpdpbusd, as GCC 12 built
# the W8A8 6x64 tile once).
_IN_REGISTERS = """\
  10:\tvpbroadcastd (%rax,%rsi,4),%zmm7
  17:\tvpdpbusd %zmm13,%zmm7,%zmm6
  1d:\tvpdpbusd %zmm14,%zmm7,%zmm8
  23:\tadd    $0x1,%rsi
  27:\tcmp    %rsi,%rdx
  2a:\tjg     10 <f+0x10>
  30:\tvmovdqu64 %zmm6,(%rdi)"""
_ON_STACK = """\
  10:\tvpbroadcastd (%rax,%rsi,4),%zmm7
  17:\tvmovdqa64 0x688(%rsp),%zmm6
  1f:\tvpdpbusd %zmm13,%zmm7,%zmm6
  25:\tvmovdqa64 %zmm6,0x688(%rsp)
  2d:\tvmovdqa64 0x6c8(%rsp),%zmm8
  35:\tvpdpbusd %zmm14,%zmm7,%zmm8
  3b:\tvmovdqa64 %zmm8,0x6c8(%rsp)
  43:\tadd    $0x1,%rsi
  47:\tcmp    %rsi,%rdx
  4a:\tjg     10 <f+0x10>"""


def test_register_tile_check_tells_spilled_accumulators():
    mod = _script()
    assert mod.accumulator_spills(_IN_REGISTERS.splitlines()) == (0, 2)
    assert mod.accumulator_spills(_ON_STACK.splitlines()) == (2, 2)
    # a store after the loop (the tile's result) is not in the hot loop
    assert mod.accumulator_spills((_IN_REGISTERS + "\n  38:\tvmovdqa64 %zmm6,0x40(%rsp)").splitlines()) == (0, 2)
    # FMA forms and VEX-encoded VNNI count as accumulations
    assert mod.ACCUMULATE.search("  1f:\tvfmadd132ps %ymm14,%ymm10,%ymm3")
    assert mod.ACCUMULATE.search("  1f:\t{vex} vpdpbusd %ymm7,%ymm6,%ymm3")


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")),
                    reason="needs Debian's g++-aarch64-linux-gnu and qemu-user (.ci/run installs them)")
def test_aarch64_cross_build_runs_the_scalar_path(tmp_path):
    out = _check(tmp_path)
    assert "cross: aarch64 build with paths ['scalar']" in out
    assert "selftest: path scalar ok (aarch64 under qemu)" in out
