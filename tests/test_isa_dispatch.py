"""Runtime ISA dispatch: CPUID picks the best path; QKERNELS_CPU_ISA forces a lower one."""
import subprocess
import sys

import pytest

import qkernels
from conftest import available_isas


def _isa_in_subprocess(value):
    env = {"QKERNELS_CPU_ISA": value, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", "import qkernels; print(qkernels.cpu_isa())"],
                          env=env, capture_output=True, text=True)


def test_default_is_best_detected():
    assert qkernels.detected_cpu_isa() in ("amx", "avx512_vnni", "avx_vnni", "avx2", "scalar")


@pytest.mark.parametrize("name", available_isas())
def test_env_forces_lower_path(name):
    r = _isa_in_subprocess(name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name


def test_env_cannot_raise_above_cpu():
    r = _isa_in_subprocess("amx")
    assert r.returncode == 0, r.stderr
    best = qkernels.detected_cpu_isa()
    assert r.stdout.strip() == ("avx512_vnni" if best == "amx" else best)  # AMX kernels: later issue


def test_env_unknown_name_is_an_error():
    r = _isa_in_subprocess("sse9")
    assert r.returncode != 0 and "QKERNELS_CPU_ISA" in r.stderr and "sse9" in r.stderr
