"""Loads the native extension (registers torch.ops.qkernels.*) and exposes the CPU feature model:
which kernel paths this CPU can run, which one runs now, and QKERNELS_CPU_ISA."""
from __future__ import annotations

import os
import warnings

import torch  # noqa: F401  (loads libtorch before the extension)

try:
    from . import _C
except ImportError as e:  # pragma: no cover - only without a build
    raise ImportError(
        "qkernels native extension is not built: run `pip install --no-build-isolation -e .` "
        f"in the qkernels checkout ({e})") from e


def supported_cpu_paths() -> list[str]:
    """The CPU paths this CPU (and OS) can run, best first; the last is always 'scalar'.

    Example: AMD Zen 4 -> ['avx512_vnni', 'avx2', 'scalar']; Alder Lake -> ['avx_vnni', 'avx2', 'scalar'].
    """
    return list(_C.supported_paths(_C.cpu_features()))


def cpu_isa() -> str:
    """The CPU path that runs now: 'amx' | 'avx512_vnni' | 'avx_vnni' | 'avx2' | 'scalar'."""
    return _C.cpu_path()


def set_cpu_isa(name: str) -> str:
    """Select the CPU path ``name`` for every later call (process-wide); returns it.

    ValueError naming the missing CPU features if this CPU cannot run it, or for an unknown name.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    return _C.set_cpu_path(name)


def detected_cpu_isa() -> str:
    """The default path: the best one this CPU supports (supported_cpu_paths()[0])."""
    return supported_cpu_paths()[0]


def cpu_info() -> dict:
    """What qkernels knows about this CPU: 'vendor', 'model', 'family' and 'model_id' (CPUID's
    display family and model numbers: 26 for AMD Zen 5, 25 for Zen 3/4, 6 for Intel), 'features'
    (the CPU features the OS enables, as the feature model names them), 'paths'
    (supported_cpu_paths()), 'path' (cpu_isa()), 'missing' ({path: [features this CPU lacks]} for
    every path it cannot run) and 'disabled' (features turned off by
    QKERNELS_DISABLE_CPU_FEATURES), 'extensions' (the optional kernels the
    active path uses on this CPU, e.g. 'avx512_bf16': W8A16 / W4A16 on bf16 activations through
    vdpbf16ps) and 'tuning' (the run-time tuning choices, e.g. the M from which those run)."""
    feats = list(_C.cpu_features())
    paths = supported_cpu_paths()
    family, model_id = _C.cpu_family_model()
    return {"vendor": _C.cpu_vendor(), "model": _C.cpu_model(), "family": family, "model_id": model_id,
            "features": feats, "paths": paths, "path": cpu_isa(),
            "missing": {p: list(_C.missing_features(p, feats)) for p in _C.path_names() if p not in paths},
            "disabled": list(_C.cpu_disabled_features()), "extensions": list(_C.cpu_extensions()),
            "tuning": dict(_C.tuning())}


def _apply_env() -> None:
    """QKERNELS_DISABLE_CPU_FEATURES (read by the extension) turns detected features off, so a host
    can act as a smaller CPU. QKERNELS_CPU_ISA selects a path; one this CPU cannot run (or an
    unknown name) is never run: a warning says why and the default path stays."""
    off = [f for f in os.environ.get("QKERNELS_DISABLE_CPU_FEATURES", "").replace(",", " ").split()]
    unknown = [f for f in off if f not in _C.feature_names()]
    if unknown:
        warnings.warn(f"QKERNELS_DISABLE_CPU_FEATURES: unknown feature(s) {unknown} ignored; the features "
                      f"are {list(_C.feature_names())}", RuntimeWarning, stacklevel=3)
    tuning = _C.tuning()  # the extension read QKERNELS_TUNE_<NAME>; say which were not taken
    for var, value in os.environ.items():
        if not var.startswith("QKERNELS_TUNE_"):
            continue
        name = var[len("QKERNELS_TUNE_"):].lower()
        if name not in tuning:
            warnings.warn(f"{var}: unknown tuning choice ignored; the choices are "
                          f"{['QKERNELS_TUNE_' + k.upper() for k in tuning]}", RuntimeWarning, stacklevel=3)
        elif not (value.isascii() and value.isdigit() and len(value) <= 15):
            warnings.warn(f"{var}={value!r} ignored: expected a non-negative integer; using {tuning[name]}",
                          RuntimeWarning, stacklevel=3)
    want = os.environ.get("QKERNELS_CPU_ISA")
    if not want:
        return
    try:
        set_cpu_isa(want)
    except ValueError as e:
        warnings.warn(f"QKERNELS_CPU_ISA={want!r} ignored: {e}; using the default path "
                      f"{cpu_isa()!r}", RuntimeWarning, stacklevel=3)


_apply_env()
