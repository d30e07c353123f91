"""The CPU feature model: feature decoding, path selection on the feature sets of real CPUs,
this host's detection, set_cpu_isa / QKERNELS_CPU_ISA, and QKERNELS_DISABLE_CPU_FEATURES."""
import os
import platform
import subprocess
import sys

import pytest
import torch

import qkernels
from qkernels import _ext

_C = _ext._C

BASE = {"avx", "avx2", "fma", "f16c"}
AVX512 = {"avx512f", "avx512dq", "avx512bw", "avx512vl"}
AMX = {"amx_tile", "amx_int8", "amx_bf16"}
# Features of real CPUs, as CPUID + an AVX-512-enabling OS report them (qkernels' feature names).
CPUS = {
    "no AVX (e.g. Atom / Pentium Silvermont)": (set(), ["scalar"]),
    "Intel Haswell": (BASE, ["avx2", "scalar"]),
    "Intel Skylake-SP (AVX-512, no VNNI)": (BASE | AVX512, ["avx2", "scalar"]),
    "Intel Cascade Lake": (BASE | AVX512 | {"avx512_vnni"}, ["avx512_vnni", "avx2", "scalar"]),
    "Intel Ice Lake-SP": (BASE | AVX512 | {"avx512_vnni"}, ["avx512_vnni", "avx2", "scalar"]),
    "Intel Alder Lake (AVX-VNNI, no AVX-512)": (BASE | {"avx_vnni"}, ["avx_vnni", "avx2", "scalar"]),
    "Intel Sapphire Rapids": (BASE | AVX512 | {"avx512_vnni", "avx512_bf16", "avx_vnni"} | AMX,
                              ["avx512_vnni", "avx_vnni", "avx2", "scalar"]),
    "AMD Zen 3": (BASE, ["avx2", "scalar"]),
    "AMD Zen 4": (BASE | AVX512 | {"avx512_vnni", "avx512_bf16"}, ["avx512_vnni", "avx2", "scalar"]),
    "AMD Zen 5": (BASE | AVX512 | {"avx512_vnni", "avx512_bf16", "avx_vnni"},
                  ["avx512_vnni", "avx_vnni", "avx2", "scalar"]),
    "AVX2 without FMA (a masked VM)": ({"avx", "avx2"}, ["scalar"]),
}


@pytest.mark.parametrize("cpu", CPUS)
def test_selection_on_real_cpus(cpu):
    features, expect = CPUS[cpu]
    assert _C.supported_paths(sorted(features)) == expect
    for path in _C.path_names():
        missing = _C.missing_features(path, sorted(features))
        assert (missing == []) == (path in expect), (path, missing)
        assert not set(missing) & features


def test_missing_features_name_exactly_what_is_absent():
    zen4 = sorted(CPUS["AMD Zen 4"][0])
    assert _C.missing_features("avx_vnni", zen4) == ["avx_vnni"]
    assert _C.missing_features("avx512_vnni", sorted(BASE)) == ["avx512f", "avx512dq", "avx512bw", "avx512vl",
                                                                "avx512_vnni"]
    with pytest.raises(ValueError, match="unknown CPU feature 'sse9'"):
        _C.supported_paths(["sse9"])


# CPUID words of a Sapphire Rapids core (leaf 1 ECX; leaf 7.0 EBX/ECX/EDX; leaf 7.1 EAX).
SPR_L1 = [0, 0, (1 << 12) | (1 << 27) | (1 << 28) | (1 << 29), 0]
SPR_L7 = [1, (1 << 5) | (1 << 16) | (1 << 17) | (1 << 30) | (1 << 31), 1 << 11, (1 << 22) | (1 << 24) | (1 << 25)]
SPR_L71 = [(1 << 4) | (1 << 5), 0, 0, 0]
ALL_STATE = 0x6 | 0xE0 | 0x60000


def test_cpuid_decoding():
    feats = set(_C.features_from_cpuid(0x20, SPR_L1, SPR_L7, SPR_L71, ALL_STATE))
    assert feats == CPUS["Intel Sapphire Rapids"][0]


@pytest.mark.parametrize("xcr0,absent", [
    (0x6 | 0x60000, AVX512 | {"avx512_vnni", "avx512_bf16"}),   # OS does not save ZMM state
    (0x6 | 0xE0, AMX),                                           # OS does not enable AMX tiles
    (0x0, BASE | AVX512 | {"avx512_vnni", "avx512_bf16", "avx_vnni"} | AMX),  # no XSAVE at all
])
def test_features_need_the_os_to_save_their_registers(xcr0, absent):
    feats = set(_C.features_from_cpuid(0x20, SPR_L1, SPR_L7, SPR_L71, xcr0))
    assert not feats & absent
    assert feats == CPUS["Intel Sapphire Rapids"][0] - absent


def test_leaf_7_only_when_the_cpu_has_it():
    feats = set(_C.features_from_cpuid(0x6, SPR_L1, SPR_L7, SPR_L71, ALL_STATE))
    assert feats == {"avx", "fma", "f16c"}


LINUX_FLAGS = {"avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f",
               "avx512dq": "avx512dq", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
               "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "avx_vnni": "avx_vnni",
               "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16"}


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs Linux /proc/cpuinfo")
def test_detection_agrees_with_the_linux_kernel():
    """Linux lists a CPU feature only when it also enables its register state; so must we."""
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    assert set(LINUX_FLAGS) == set(_C.feature_names())
    detected = set(qkernels.cpu_info()["features"]) | set(qkernels.cpu_info()["disabled"])
    assert detected == {ours for ours, linux in LINUX_FLAGS.items() if linux in flags}


def test_this_host():
    info = qkernels.cpu_info()
    assert set(info) >= {"vendor", "model", "features", "paths", "path", "missing"}
    paths = qkernels.supported_cpu_paths()
    assert paths == _C.supported_paths(info["features"]) and paths[-1] == "scalar"
    assert qkernels.detected_cpu_isa() == paths[0] and info["paths"] == paths
    assert set(info["missing"]) == set(_C.path_names()) - set(paths)
    assert all(info["missing"].values())


def test_set_cpu_isa_selects_exactly_that_path():
    prev = qkernels.cpu_isa()
    try:
        for p in qkernels.supported_cpu_paths():
            assert qkernels.set_cpu_isa(p) == p and qkernels.cpu_isa() == p
    finally:
        qkernels.set_cpu_isa(prev)
    with pytest.raises(ValueError, match="unknown CPU path 'sse9'; the paths are: avx512_vnni"):
        qkernels.set_cpu_isa("sse9")
    with pytest.raises(TypeError, match="name must be a str"):
        qkernels.set_cpu_isa(3)
    assert qkernels.cpu_isa() == prev


def _run(env, code="import qkernels, json; print(json.dumps(qkernels.cpu_info()))"):
    import json
    full = {"PATH": "/usr/bin:/bin", **env}
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], env=full, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


@pytest.mark.parametrize("name", qkernels.supported_cpu_paths())
def test_env_selects_a_supported_path(name):
    info, err = _run({"QKERNELS_CPU_ISA": name})
    assert info["path"] == name and "Warning" not in err


def test_env_unknown_name_warns_and_keeps_the_default():
    info, err = _run({"QKERNELS_CPU_ISA": "sse9"})
    assert info["path"] == qkernels.detected_cpu_isa()
    assert "QKERNELS_CPU_ISA='sse9' ignored" in err and "unknown CPU path" in err


def test_disabled_features_make_this_host_a_smaller_cpu():
    """Any x86-64 host can act as Zen 4 (no AVX-VNNI, no AMX) or Haswell: a path whose features are
    turned off is not offered, QKERNELS_CPU_ISA asking for it warns naming the missing feature, and
    the kernels still run on what is left."""
    if "avx512_vnni" not in qkernels.supported_cpu_paths():
        pytest.skip("this host has no AVX-512 VNNI to act as a Zen 4")
    code = ("import qkernels, json, torch; from torch import nn; "
            "q = qkernels.QuantLinear.from_float(nn.Linear(64, 8)); q(torch.randn(2, 64)); "
            "print(json.dumps(qkernels.cpu_info()))")
    info, err = _run({"QKERNELS_DISABLE_CPU_FEATURES": "avx_vnni,amx_tile,amx_int8,amx_bf16",
                      "QKERNELS_CPU_ISA": "avx_vnni"}, code)
    assert info["paths"] == ["avx512_vnni", "avx2", "scalar"] and info["path"] == "avx512_vnni"
    assert info["missing"]["avx_vnni"] == ["avx_vnni"]
    assert "QKERNELS_CPU_ISA='avx_vnni' ignored" in err and "lacks: avx_vnni" in err
    info, err = _run({"QKERNELS_DISABLE_CPU_FEATURES": "avx512f,avx_vnni,bogus"}, code)
    assert info["paths"] == ["avx2", "scalar"] and "avx512f" in info["disabled"]
    assert "unknown feature(s) ['bogus']" in err


def test_every_supported_path_runs(isa):
    """The isa fixture walks supported_cpu_paths(); each path computes (bit-exact W8A8)."""
    from qkernels import reference as R
    a = torch.randint(-127, 128, (3, 70), dtype=torch.int8)
    w = torch.randint(-127, 128, (9, 70), dtype=torch.int8)
    Q, L = torch.ops.qkernels, "int8_w8a8_panels"
    y = Q.w8a8_gemm(a, torch.ones(3), Q.pack_int8(w, L), L, torch.ones(9), None, 9, torch.float32)
    assert qkernels.cpu_isa() == isa and torch.equal(y, R.int8_matmul(a, w).float())


def test_extensions_follow_the_cpu_and_the_active_path():
    """The avx512_bf16 extension (W8A16 / W4A16 on bf16 activations via vdpbf16ps) is used exactly
    when the active path is avx512_vnni and the CPU also reports avx512_bf16; turning the feature
    off removes it and the kernels still run (on the path's own fp32 kernels), within the same bound."""
    assert set(_C.ext_names()) == {"avx512_bf16"}
    info = qkernels.cpu_info()
    want = info["path"] == "avx512_vnni" and "avx512_bf16" in info["features"]
    assert info["extensions"] == (["avx512_bf16"] if want else [])
    t = info["tuning"]
    assert t["bf16_dot_min_batch"] >= 1 and t["bf16_dot_min_rows"] >= 1 and t["bf16_dot_chunk_k"] % 2 == 0
    prev = qkernels.cpu_isa()
    try:
        for p in qkernels.supported_cpu_paths():
            qkernels.set_cpu_isa(p)
            assert ("avx512_bf16" in qkernels.cpu_info()["extensions"]) == (want and p == "avx512_vnni")
    finally:
        qkernels.set_cpu_isa(prev)
    if not want:
        pytest.skip("this host's default path has no avx512_bf16 extension")
    code = ("import qkernels, json, torch; from torch import nn; torch.manual_seed(0); "
            "l = nn.Linear(300, 70); x = torch.randn(16, 300).bfloat16(); "
            "y = [qkernels.QuantLinear.from_float(l, weight_bits=b, act_bits=None, group_size=g)(x).float().tolist() "
            "for b, g in ((8, None), (4, 64))]; print(json.dumps([qkernels.cpu_info(), y]))")
    (on, y_on), _ = _run({}, code)
    (off, y_off), _ = _run({"QKERNELS_DISABLE_CPU_FEATURES": "avx512_bf16"}, code)
    assert on["extensions"] == ["avx512_bf16"] and off["extensions"] == [] and off["path"] == "avx512_vnni"
    for a, b in zip(y_on, y_off):  # both fp32 sums of exact products, rounded to bf16
        assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=2 ** -7, atol=1e-3)


def test_tuning_overrides_from_the_environment():
    info, _ = _run({"QKERNELS_TUNE_BF16_DOT_MIN_BATCH": "0", "QKERNELS_TUNE_BF16_DOT_MIN_ROWS": "1",
                    "QKERNELS_TUNE_BF16_DOT_CHUNK_K": "257", "QKERNELS_TUNE_DECODE_PANELS": "3",
                    "QKERNELS_TUNE_TILE_ROWS": "2", "QKERNELS_TUNE_PREFETCH_DISTANCE": "1000",
                    "QKERNELS_TUNE_SPARSE_PREFETCH_DISTANCE": "99999999", "QKERNELS_TUNE_YMM_PREFETCH_DISTANCE": "100",
                    "QKERNELS_TUNE_F32_CONVERT_MIN_ROWS": "0", "QKERNELS_TUNE_STREAM_CHUNK_K": "4099",
                    "QKERNELS_TUNE_STREAM_MAX_ROWS": "99"})
    assert info["tuning"] == {"bf16_dot_min_batch": 1, "bf16_dot_min_rows": 1, "bf16_dot_chunk_k": 256,
                              "decode_panels": 3, "tile_rows": 2, "prefetch_distance": 960,
                              "sparse_prefetch_distance": 1 << 20, "ymm_prefetch_distance": 64,
                              "f32_convert_min_rows": 1, "stream_chunk_k": 4096, "stream_max_rows": 32}


def test_family_and_model_decoding():
    """CPUID leaf 1 eax -> display family / model, with the extended fields where Intel and AMD use
    them; cpu_info() reports this host's."""
    assert _C.family_model_from_cpuid(0x000806F8) == (6, 143)  # Intel Sapphire Rapids
    assert _C.family_model_from_cpuid(0x00A10F11) == (25, 17)  # AMD Zen 4 (Genoa)
    assert _C.family_model_from_cpuid(0x00B00F21) == (26, 2)   # AMD Zen 5 (Turin)
    assert _C.family_model_from_cpuid(0x00000543) == (5, 4)    # base family < 6: no extended model
    info = qkernels.cpu_info()
    if platform.machine() in ("x86_64", "AMD64"):
        assert info["family"] >= 6 and info["model_id"] >= 0
    else:
        assert (info["family"], info["model_id"]) == (0, 0)


def test_decode_panels_default_follows_the_cpu_and_set_tuning_changes_it():
    """decode_panels (M = 1 weight streams per core) is chosen from the CPU: one on AMD Zen 4 (family
    25 with AVX-512), Zen 5 and later, each kernel's own width elsewhere; so is the 2:4 kernels'
    prefetch distance (none on Zen 4, 8 KiB elsewhere); set_tuning changes a choice by name,
    clamped to its range, and rejects unknown names."""
    info = qkernels.cpu_info()
    amd = info["vendor"] == "AuthenticAMD"
    zen4 = amd and info["family"] == 25 and "avx512f" in info["features"]
    assert info["tuning"]["decode_panels"] == (1 if zen4 or (amd and info["family"] >= 26) else 0)
    assert info["tuning"]["sparse_prefetch_distance"] == (0 if zen4 else 8192)
    before = dict(_C.tuning())
    try:
        assert _C.set_tuning("decode_panels", 3) == 3 and qkernels.cpu_info()["tuning"]["decode_panels"] == 3
        assert _C.set_tuning("bf16_dot_chunk_k", 7) == 6 and _C.set_tuning("bf16_dot_min_batch", 0) == 1
        assert _C.set_tuning("prefetch_distance", 100) == 64 and _C.set_tuning("tile_rows", 5) == 5
        with pytest.raises(ValueError, match="unknown tuning choice no_such"):
            _C.set_tuning("no_such", 1)
    finally:
        for k, v in before.items():
            _C.set_tuning(k, v)
    assert dict(_C.tuning()) == before


def test_tuning_overrides_that_are_not_taken_warn():
    info, err = _run({"QKERNELS_TUNE_BF16_DOT_MIN_BATCH": " 4", "QKERNELS_TUNE_NO_SUCH": "1"})
    default = qkernels.cpu_info()["tuning"]
    assert info["tuning"] == default
    assert "QKERNELS_TUNE_BF16_DOT_MIN_BATCH=' 4' ignored: expected a non-negative integer" in err
    assert "QKERNELS_TUNE_NO_SUCH: unknown tuning choice ignored" in err
