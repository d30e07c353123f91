#!/usr/bin/env python3
"""Checks the torch-free kernel library built on its own, natively and cross-compiled.

    python scripts/check_kernel_lib.py [--build-dir DIR] [--no-cross]

Native (this x86-64 host): every path's translation units are compiled with exactly the flags of
the features cpu_paths.def gives that path; no path object defines a weak (COMDAT) symbol that the
linker could hand to another path; no microkernel keeps its accumulators in memory (see
check_register_tiles); and csrc/tests/selftest.cpp passes on every path this CPU runs.
Cross (aarch64, Debian's g++-aarch64-linux-gnu): only the architecture-neutral paths are built,
and the selftest passes under qemu-aarch64. Exits non-zero on any failure; prints what it checked.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def cpu_paths_def(extensions=None):
    """({feature: flag}, {path: (arch, [features], [sources])}) from csrc/kernels/cpu_paths.def; a
    path extension (QK_EXTENSION) is listed under its path's name with its own sources and the
    path's features plus its own, and also collected in `extensions` ({name: path}) when given."""
    feats, paths, exts = {}, {}, []
    for line in open(os.path.join(ROOT, "csrc", "kernels", "cpu_paths.def")):
        m = re.match(r'QK_FEATURE\((\w+), *"([^"]*)"', line)
        if m:
            feats[m[1]] = m[2]
        m = re.match(r'QK_PATH\((\w+), *(\w+), *"([^"]*)", *"([^"]*)"', line)
        if m:
            paths[m[1]] = (m[2], m[3].split(), m[4].split())
        m = re.match(r'QK_EXTENSION\((\w+), *(\w+), *(\w+), *"([^"]*)", *"([^"]*)"', line)
        if m:
            exts.append(m)
    for m in exts:
        arch, pfeats, _ = paths[m[1]]
        assert arch == m[2], f"extension {m[3]}: architecture {m[2]}, its path {m[1]} is {arch}"
        paths[f"{m[1]}+{m[3]}"] = (arch, pfeats + m[4].split(), m[5].split())
        if extensions is not None:
            extensions[m[3]] = m[1]
    return feats, paths


def configure_and_build(build, targets, extra=()):
    run(["cmake", "-S", ROOT, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *extra])
    run(["cmake", "--build", build, "--target", *targets])


def check_flags(build, feats, paths, built):
    """Each path TU's -m flags are exactly its features' flags; base TUs have none."""
    cmds = json.load(open(os.path.join(build, "compile_commands.json")))
    by_src = {os.path.relpath(c["file"], ROOT): set(re.findall(r"(?<!\S)-m[\w-]+", c["command"])) for c in cmds}
    for name in built:
        want = {feats[f] for f in paths[name][1]}
        for src in paths[name][2]:
            got = by_src[os.path.join("csrc", "kernels", src)]
            assert got == want, f"{src}: compiled with {sorted(got)}, path {name} needs {sorted(want)}"
    for src in ("cpu.cpp", "dispatch.cpp", "pack.cpp"):
        got = by_src[os.path.join("csrc", "kernels", src)]
        assert not got, f"{src} must build for every CPU, got {sorted(got)}"
    print(f"flags: {len(built)} paths, each TU compiled with exactly its features' flags")


def check_no_weak_symbols(build, nm="nm"):
    objs = [os.path.join(d, f) for d, _, fs in os.walk(build) for f in fs
            if f.endswith(".o") and ("qk_path_" in d or "qk_ext_" in d)]
    assert objs, "no path objects found"
    for o in objs:
        weak = [ln for ln in run([nm, "-C", o]).splitlines() if re.search(r" [WVu] ", ln)]
        assert not weak, f"{o} defines weak symbols another path could bind to: {weak[:5]}"
    print(f"symbols: {len(objs)} path objects, no weak or unique symbols")


# Microkernels are named gemm_<A><W><Acc>_<tile>_<path> with a tile of mrx.., 1xnp.., mrxnp.. or a
# per-group step; their accumulating instructions and the stores of vector registers to the stack.
UKERNEL = re.compile(r"gemm_\w+?_(?:mrx|1xnp|mrxnp|group)\w*<")
ACCUMULATE = re.compile(r"\t(?:\{vex\} )?(?:vpdpbusd|vpdpwssd|vpdpbssd|vfmadd(?:132|213|231)ps|vdpbf16ps|vpaddd|vpaddw)\s+(?:\S+,)*%([xyz]mm\d+)\s*$")
STACK_STORE = re.compile(r"\tv\w*mov\w*\s+%([xyz]mm\d+),\s*-?(?:0x[0-9a-f]+)?\(%r[sb]p")
BACK_JUMP = re.compile(r"^\s*([0-9a-f]+):\s+j\w+\s+([0-9a-f]+) <")


def functions(obj, objdump="objdump"):
    """(demangled name, [instruction lines]) of every function in obj."""
    name, body = None, []
    for ln in run([objdump, "-d", "--no-show-raw-insn", "-C", obj]).splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", ln)
        if m:
            if name:
                yield name, body
            name, body = m[1], []
        elif name and re.match(r"^\s*[0-9a-f]+:", ln):
            body.append(ln)
    if name:
        yield name, body


def accumulator_spills(body):
    """(stores, accumulations) in the hot loops of one function: a hot loop is a backward jump's
    range that holds accumulating instructions and no smaller such range; a store counts when it
    writes a register that the loop accumulates into to the stack."""
    addr = [int(ln.split(":")[0], 16) for ln in body]
    loops = []
    for ln in body:
        m = BACK_JUMP.match(ln)
        if m and int(m[2], 16) <= int(m[1], 16):
            lo, hi = int(m[2], 16), int(m[1], 16)
            if any(lo <= a <= hi and ACCUMULATE.search(x) for a, x in zip(addr, body)):
                loops.append((lo, hi))
    hot = [(lo, hi) for lo, hi in loops if not any(lo <= l2 <= h2 <= hi and (l2, h2) != (lo, hi) for l2, h2 in loops)]
    stores = accs = 0
    for lo, hi in hot:
        regs = set()
        for a, ln in zip(addr, body):
            if lo <= a <= hi:
                m = ACCUMULATE.search(ln)
                if m:
                    regs.add(m[1])
                    accs += 1
                m = STACK_STORE.search(ln)
                stores += bool(m and m[1] in regs)
    return stores, accs


def check_register_tiles(build):
    """No microkernel keeps its accumulator array in memory. Left on the stack, every accumulating
    instruction of the hot loop is followed by a store of its register (GCC 12 did this to the
    AVX-512 W8A8 6x64 tile inlined into drive(): 24 stores per 24 vpdpbusd, half the speed at
    M = 128). A tile a little over the register file spills a few (the 8-panel W4A8 decode tile
    holds 32 accumulators in 32 zmm: 3 stores per 64); the bound is half the accumulations. The AVX2
    W4A8 2-row tile accumulates in int16 chains (vpaddw, in registers) and keeps its int32 group
    sums in L1 by design: 8 stores per 72 accumulations."""
    objs = [os.path.join(d, f) for d, _, fs in os.walk(build) for f in fs
            if f.endswith(".o") and ("qk_path_" in d or "qk_ext_" in d)]
    n = 0
    for o in objs:
        for name, body in functions(o):
            if not UKERNEL.search(name):
                continue
            stores, accs = accumulator_spills(body)
            assert accs, f"{os.path.basename(o)}: {name[:100]}: no accumulating instruction in a loop"
            assert 2 * stores < accs, (f"{os.path.basename(o)}: {name[:100]} keeps accumulators in memory: "
                                       f"{stores} stack stores per {accs} accumulations in its hot loop")
            n += 1
    assert n, "no microkernels found in the path objects"
    print(f"register tiles: {n} microkernel instances, accumulators in registers")


def native(build):
    feats, paths = cpu_paths_def()
    configure_and_build(build, ["qk_selftest"])
    built = [p for p, (arch, _, _) in paths.items() if arch in ("x86", "any")]
    check_flags(build, feats, paths, built)
    check_no_weak_symbols(build)
    check_register_tiles(build)
    out = run([os.path.join(build, "qk_selftest")])
    print(out.strip())


def cross(build):
    if not shutil.which("aarch64-linux-gnu-g++"):
        raise SystemExit("cross: aarch64-linux-gnu-g++ not found (Debian: apt-get install g++-aarch64-linux-gnu)")
    feats, paths = cpu_paths_def()
    configure_and_build(build, ["qk_selftest"],
                        [f"-DCMAKE_TOOLCHAIN_FILE={os.path.join(ROOT, 'cmake', 'aarch64-linux-gnu.cmake')}"])
    built = [p for p, (arch, _, _) in paths.items() if arch == "any"]
    check_flags(build, feats, paths, built)
    objs = [d for d, _, _ in os.walk(build) if "qk_path_" in d and d.endswith(".dir")]
    assert sorted(os.path.basename(d)[len("qk_path_"):-len(".dir")] for d in objs) == sorted(built), objs
    assert not [d for d, _, _ in os.walk(build) if "qk_ext_" in d], "an x86 extension was built for aarch64"
    arch = run(["file", os.path.join(build, "qk_selftest")]) if shutil.which("file") else ""
    print(f"cross: aarch64 build with paths {built} {('(' + arch.split(':', 1)[1].strip()[:40] + ')') if arch else ''}")
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if not qemu:
        raise SystemExit("cross: built, but qemu-aarch64 not found to run the selftest (Debian: qemu-user)")
    print(run([qemu, os.path.join(build, "qk_selftest")]).strip() + " (aarch64 under qemu)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build", "kernel_check"))
    p.add_argument("--no-cross", action="store_true")
    a = p.parse_args(argv)
    try:
        native(os.path.join(a.build_dir, "native"))
        if not a.no_cross:
            cross(os.path.join(a.build_dir, "aarch64"))
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"FAILED: {' '.join(e.cmd)}\n{e.stdout}\n{e.stderr}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
