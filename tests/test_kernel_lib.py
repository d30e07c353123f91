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


@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64")),
                    reason="needs Debian's g++-aarch64-linux-gnu and qemu-user (.ci/run installs them)")
def test_aarch64_cross_build_runs_the_scalar_path(tmp_path):
    out = _check(tmp_path)
    assert "cross: aarch64 build with paths ['scalar']" in out
    assert "selftest: path scalar ok (aarch64 under qemu)" in out
