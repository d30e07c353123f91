#!/usr/bin/env python3
"""Checks the torch-free kernel library built on its own, natively and cross-compiled.

    python scripts/check_kernel_lib.py [--build-dir DIR] [--no-cross]

Native (this x86-64 host): every path's translation units are compiled with exactly the flags of
the features cpu_paths.def gives that path; no path object defines a weak (COMDAT) symbol that the
linker could hand to another path; and csrc/tests/selftest.cpp passes on every path this CPU runs.
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


def cpu_paths_def():
    """({feature: flag}, {path: (arch, [features], [sources])}) from csrc/kernels/cpu_paths.def."""
    feats, paths = {}, {}
    for line in open(os.path.join(ROOT, "csrc", "kernels", "cpu_paths.def")):
        m = re.match(r'QK_FEATURE\((\w+), *"([^"]*)"', line)
        if m:
            feats[m[1]] = m[2]
        m = re.match(r'QK_PATH\((\w+), *(\w+), *"([^"]*)", *"([^"]*)"', line)
        if m:
            paths[m[1]] = (m[2], m[3].split(), m[4].split())
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
            if f.endswith(".o") and "qk_path_" in d]
    assert objs, "no path objects found"
    for o in objs:
        weak = [ln for ln in run([nm, "-C", o]).splitlines() if re.search(r" [WVu] ", ln)]
        assert not weak, f"{o} defines weak symbols another path could bind to: {weak[:5]}"
    print(f"symbols: {len(objs)} path objects, no weak or unique symbols")


def native(build):
    feats, paths = cpu_paths_def()
    configure_and_build(build, ["qk_selftest"])
    built = [p for p, (arch, _, _) in paths.items() if arch in ("x86", "any")]
    check_flags(build, feats, paths, built)
    check_no_weak_symbols(build)
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
