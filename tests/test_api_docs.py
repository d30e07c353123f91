"""Every public name has a docstring, the package is typed (py.typed), and the docs the README
links to exist."""
import inspect
import os

import pytest

import qkernels
from qkernels import formats, hf, ops, reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _public():
    for mod in (qkernels, formats, ops, reference, hf):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.ismodule(obj) or not (callable(obj) or isinstance(obj, type)):
                continue
            yield f"{mod.__name__}.{name}", obj
            if isinstance(obj, type):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (callable(member) or isinstance(member, (property, classmethod))):
                        continue
                    yield f"{mod.__name__}.{name}.{attr}", getattr(member, "__func__", member)


@pytest.mark.parametrize("name,obj", list(_public()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_name_has_a_docstring(name, obj):
    doc = inspect.getdoc(obj.fget if isinstance(obj, property) else obj)
    assert doc and len(doc) > 10, f"{name} has no docstring"


def test_typed_and_documented():
    assert os.path.exists(os.path.join(ROOT, "qkernels", "py.typed"))
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert len(readme.encode()) < 12_000
    for link in ("docs/formats.md", "docs/numerics.md", "docs/kernels.md", "docs/design.md", "bench/results/"):
        assert link in readme and os.path.exists(os.path.join(ROOT, link)), link
