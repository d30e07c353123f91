"""The layering rules (docs/design.md): nn -> ops -> {C++, Triton, reference}, nothing runs back up.
Read from the source files' import statements, so a lazy import counts as much as a top-level one."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each top-level part of the package and the qkernels parts it may import.
ALLOWED = {
    "reference": set(),                                   # the oracle: nothing else of qkernels
    "triton_kernels": {"formats"},                        # kernels read the blob layouts, nothing above
    "formats": {"_ext"},                                  # geometry comes from the C++ library
    "_ext": {"_C"},                                       # the native extension
    "backend": set(),
    "ops": {"_ext", "backend", "formats", "reference", "triton_kernels"},
    "nn": {"ops", "formats", "backend", "_ext"},          # production code never calls the reference
    "quantize": {"nn", "ops", "formats", "calibration"},
    "calibration": {"nn", "ops", "formats"},
    "qat": {"nn", "ops", "calibration", "quantize"},
    "mixed": {"calibration", "quantize"},
    "files": {"nn", "quantize"},
    "hf": {"files", "nn", "quantize"},
}


def _modules():
    for base, pkg in ((os.path.join(ROOT, "qkernels"), "qkernels"), (os.path.join(ROOT, "triton_kernels"),
                                                                    "qkernels.triton_kernels")):
        for d, _, files in os.walk(base):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(d, f), base)[:-3].replace(os.sep, ".")
                    name = pkg if rel == "__init__" else f"{pkg}.{rel.removesuffix('.__init__')}"
                    yield name, os.path.join(d, f)


def _part(module: str) -> str | None:
    """qkernels.<part>... -> <part> (triton_kernels for its package); None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(name: str, path: str):
    is_pkg = path.endswith("__init__.py")
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - (node.level - 1)] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if node.module is None:
                yield from (f"{mod}.{a.name}" for a in node.names)
            else:
                yield mod


MODULES = dict(_modules())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_follow_the_layers(name):
    part = _part(name)
    if part is None:
        return  # qkernels/__init__.py assembles the public API from every part
    for imp in _imports(name, MODULES[name]):
        if not imp.startswith("qkernels."):
            continue
        target = _part(imp)
        assert target == part or target in ALLOWED[part], f"{name} imports {imp}"


def test_every_part_is_ruled():
    parts = {_part(n) for n in MODULES} - {None}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)


def test_the_rule_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ..reference import quant\nfrom .. import ops\n")
    assert list(_imports("qkernels.nn.bad", str(bad))) == ["qkernels.reference", "qkernels.ops"]
