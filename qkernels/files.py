"""Quantized models as files: save_quantized / load_quantized (qkernels checkpoints) and the import
of GPTQ and AWQ checkpoint directories into the same QuantLinear.

A qkernels checkpoint directory holds safetensors (``model.safetensors``, or shards
``model-00001-of-0000N.safetensors`` with ``model.safetensors.index.json`` above max_shard_size)
with every tensor of the model (the modules' state_dicts; no pickle anywhere), and
``qkernels_config.json``::

    {"quant_method": "qkernels", "format_version": 1, "module_format_version": 2,
     "modules": {"<fully qualified name>": {"kind": "QuantLinear" | "SparseLinear",
                 "in_features": K, "out_features": N, "bias": true, <the module's configuration>}},
     "aliases": {"<tensor name>": "<name of the stored tensor it shares memory with>"}}

Loading never materializes a float weight: quantized modules are built on the meta device and
take their packed weight from the files, the other tensors are assigned as they are read, one
module at a time.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Iterable

import torch
from torch import nn

from .nn import QuantLinear, SparseLinear
from .nn._common import FORMAT_VERSION, PackedLinear
from .nn.sparse_linear import VALUE_DTYPES
from .quantize import is_conv1d, name_list, set_module

CONFIG_NAME = "qkernels_config.json"
FILES_FORMAT_VERSION = 1
SINGLE_FILE = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
KINDS = {"QuantLinear": QuantLinear, "SparseLinear": SparseLinear}
_DTYPES = {str(d).replace("torch.", ""): d for d in VALUE_DTYPES}


# ---- what a module is ----------------------------------------------------------------------------
def linear_shape(m: nn.Module):
    """(in_features, out_features) of an nn.Linear or a transformers Conv1D (GPT-2 style, weight
    stored [in, out]); None for anything else."""
    if isinstance(m, (nn.Linear, PackedLinear)):
        return m.in_features, m.out_features
    if is_conv1d(m):
        return m.weight.shape[0], m.weight.shape[1]
    return None


def module_config(m: PackedLinear) -> dict:
    """The qkernels_config.json entry of a quantized module: kind, shape and configuration."""
    entry = {"kind": type(m).__name__, "in_features": m.in_features, "out_features": m.out_features,
             "bias": m.bias is not None}
    if isinstance(m, QuantLinear):
        entry.update(weight_bits=m.weight_bits, act_bits=m.act_bits, group_size=m.group_size, symmetric=m.symmetric)
    else:
        entry.update(weight_bits=m.weight_bits, value_dtype=str(m.value_dtype).replace("torch.", ""))
    if m.smooth:  # calibrated activation preparation (absent: off, as in files written before it)
        entry["smooth"] = True
    if m.act_scale != "dynamic":
        entry["act_scale"] = m.act_scale
    return entry


def build_module(fqn: str, entry: dict, device) -> PackedLinear:
    """An empty module of the entry's kind and configuration (ValueError naming the module)."""
    try:
        kind = KINDS[entry["kind"]]
        args = dict(in_features=entry["in_features"], out_features=entry["out_features"], bias=entry["bias"])
        act_scale = entry.get("act_scale", "dynamic")
        if kind is QuantLinear:
            return QuantLinear(**args, weight_bits=entry["weight_bits"], act_bits=entry["act_bits"],
                               group_size=entry["group_size"], symmetric=entry["symmetric"], device=device,
                               smooth=entry.get("smooth", False), act_scale=act_scale)
        return SparseLinear(**args, weight_bits=entry["weight_bits"], device=device,
                            value_dtype=_DTYPES[entry["value_dtype"]], act_scale=act_scale)
    except (KeyError, TypeError, ValueError, NotImplementedError) as e:
        raise ValueError(f"{CONFIG_NAME}: module {fqn!r} has an invalid entry {entry}: {e}") from e


def replace_module(model: nn.Module, fqn: str, new: nn.Module) -> None:
    """Put `new` at fqn and at every other name of the module that is there now (shared modules)."""
    old = model.get_submodule(fqn)
    set_module(model, [name for name, m in model.named_modules(remove_duplicate=False) if m is old and name], new)


def prepare_modules(model: nn.Module, modules, where: str) -> dict:
    """{name: empty meta module} for the entries of a checkpoint's "modules" (qkernels_config.json
    or a transformers quantization_config), each checked against the model's module at that name;
    ValueError naming the module. Nothing in the model changes."""
    if not isinstance(modules, dict) or not modules:
        raise ValueError(f"{where}: 'modules' must name the quantized modules, got {modules!r}")
    built = {}
    for fqn, entry in modules.items():
        if not isinstance(entry, dict) or "in_features" not in entry or "out_features" not in entry:
            raise ValueError(f"{where}: module {fqn!r} has an invalid entry {entry!r}")
        check_target(model, fqn, entry["in_features"], entry["out_features"])
        built[fqn] = build_module(fqn, entry, "meta")
    return built


def check_target(model: nn.Module, fqn: str, in_features: int, out_features: int) -> nn.Module:
    """The model's module at fqn, which must be Linear-like with this shape (ValueError otherwise)."""
    try:
        m = model.get_submodule(fqn)
    except AttributeError:
        raise ValueError(f"the checkpoint quantizes module {fqn!r}, which the model does not have") from None
    shape = linear_shape(m)
    if shape is None:
        raise ValueError(f"module {fqn!r}: the checkpoint quantizes it as a linear layer, but the model's "
                         f"module there is a {type(m).__name__}")
    if shape != (in_features, out_features):
        raise ValueError(f"module {fqn!r}: the checkpoint has in_features={in_features}, out_features="
                         f"{out_features}; the model's {type(m).__name__} has {shape[0]}, {shape[1]}")
    return m


# ---- sizes and shards ----------------------------------------------------------------------------
def parse_size(size) -> int:
    """'4GB' / '500MB' / '10KiB' / an int (bytes) -> bytes."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B\s*", str(size), re.IGNORECASE)
    if not m:
        raise ValueError(f"max_shard_size must be a positive int (bytes) or a size like '4GB', got {size!r}")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(m.group(2).upper() or " "))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# ---- save ----------------------------------------------------------------------------------------
def save_quantized(model: nn.Module, directory: str, max_shard_size="4GB") -> None:
    """Write every tensor of `model` as safetensors shard(s) in `directory` (an index when sharded)
    plus qkernels_config.json naming each quantized module's kind and configuration. No pickle.

    Tensors that share memory (tied weights) are stored once; qkernels_config.json records the
    other names as aliases and load_quantized restores them."""
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    limit = parse_size(max_shard_size)
    modules = {fqn: module_config(m) for fqn, m in model.named_modules() if isinstance(m, PackedLinear)}
    if not modules:
        raise ValueError("model has no QuantLinear / SparseLinear module; quantize it first "
                         "(qkernels.quantize_ / sparsify_)")
    state = model.state_dict()
    if any(t.device.type == "meta" for t in state.values()):
        raise ValueError("model holds tensors on the meta device (not loaded); nothing to save")
    tensors, aliases, seen = {}, {}, {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and key in seen:  # tied: the same tensor under two names
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu").contiguous()
    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        if current and size + _nbytes(t) > limit:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += _nbytes(t)
    shards.append(current)
    os.makedirs(directory, exist_ok=True)
    for f in os.listdir(directory):  # stale shards of an earlier save would be read back
        if re.fullmatch(r"model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?", f):
            os.remove(os.path.join(directory, f))
    if len(shards) == 1:
        save_file(shards[0], os.path.join(directory, SINGLE_FILE), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(directory, fname), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, fname))
        with open(os.path.join(directory, INDEX_NAME), "w") as f:
            json.dump({"metadata": {"total_size": sum(_nbytes(t) for t in tensors.values())},
                       "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(directory, CONFIG_NAME), "w") as f:
        json.dump({"quant_method": "qkernels", "format_version": FILES_FORMAT_VERSION,
                   "module_format_version": FORMAT_VERSION, "modules": modules, "aliases": aliases}, f, indent=1)


# ---- reading safetensors directories -------------------------------------------------------------
class TensorFiles:
    """The tensors of a directory of safetensors (one file, or shards with an index), read one at a
    time from memory-mapped files."""

    def __init__(self, directory: str):
        from safetensors import safe_open

        index = os.path.join(directory, INDEX_NAME)
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
            if not files:
                raise ValueError(f"{directory}: no .safetensors file (and no {INDEX_NAME})")
            weight_map = None
        self._handles = {f: safe_open(os.path.join(directory, f), framework="pt") for f in files}
        if weight_map is None:
            weight_map = {k: f for f, h in self._handles.items() for k in h.keys()}
        self.where = weight_map

    def keys(self) -> Iterable[str]:
        return self.where.keys()

    def __contains__(self, key) -> bool:
        return key in self.where

    def get(self, key: str) -> torch.Tensor:
        return self._handles[self.where[key]].get_tensor(key)


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def checkpoint_kind(directory: str):
    """('qkernels' | 'gptq' | 'awq', its configuration dict) for a checkpoint directory."""
    if not os.path.isdir(directory):
        raise ValueError(f"directory {directory!r} does not exist")
    cfg = _read_json(os.path.join(directory, CONFIG_NAME))
    if cfg is not None:
        return "qkernels", cfg
    gptq = _read_json(os.path.join(directory, "quantize_config.json"))
    if gptq is not None:
        return "gptq", gptq
    hf = _read_json(os.path.join(directory, "config.json")) or {}
    q = hf.get("quantization_config") or {}
    method = str(q.get("quant_method", "")).lower()
    if method in ("gptq", "awq"):
        return method, q
    if method == "qkernels" and "modules" in q:
        return "qkernels", q
    raise ValueError(f"{directory}: not a checkpoint load_quantized reads: no {CONFIG_NAME}, no "
                     "quantize_config.json and no config.json quantization_config with quant_method "
                     f"'gptq' or 'awq'" + (f" (it has quant_method {method!r})" if method else ""))


# ---- load ----------------------------------------------------------------------------------------
def load_quantized(model: nn.Module, directory: str) -> nn.Module:
    """Load a qkernels, GPTQ or AWQ checkpoint directory into `model` (the float architecture,
    typically built on the meta device) and return it on the CPU, ready to run.

    The listed layers become QuantLinear / SparseLinear (GPTQ / AWQ: weight-only int4 QuantLinear
    with the checkpoint's integers exactly), every other tensor is loaded as stored (cast to the
    model's dtype for GPTQ / AWQ, whose non-quantized tensors are often fp16), and the buffers a
    checkpoint never holds (rotary inv_freq, position_ids) are rebuilt as the architecture builds
    them. A mismatch between model and files is a ValueError naming the module or tensor; a GPTQ /
    AWQ checkpoint with bits other than 4 is a NotImplementedError naming them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    kind, cfg = checkpoint_kind(directory)
    files = TensorFiles(directory)
    if kind == "qkernels":
        aliases, imported, cast = _install_qkernels_modules(model, cfg), set(), False
    else:
        aliases, imported, cast = {}, _install_int4_import(model, kind, cfg, files), True
    aliases = {**tied_aliases(model, files), **aliases}
    load_tensors(model, files, aliases, cast, imported)
    _rebuild_missing_buffers(model)
    return model.eval()


def tied_aliases(model: nn.Module, files: TensorFiles) -> dict:
    """{missing name: stored name} for parameters the model ties (one Parameter under several names,
    e.g. lm_head.weight and the input embedding) of which the files hold only one name, as
    transformers and GPTQ / AWQ checkpoints store a tied embedding; the loaded model stays tied."""
    names: dict[int, list[str]] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        for pname, p in m._parameters.items():
            if p is not None:
                names.setdefault(id(p), []).append(f"{mname}.{pname}" if mname else pname)
    out = {}
    for group in names.values():
        stored = [n for n in group if n in files]
        if stored:
            out.update({n: stored[0] for n in group if n not in files})
    return out


def _install_qkernels_modules(model: nn.Module, cfg: dict) -> dict:
    if cfg.get("format_version") != FILES_FORMAT_VERSION:
        raise ValueError(f"{CONFIG_NAME}: this qkernels reads format_version {FILES_FORMAT_VERSION}, "
                         f"the checkpoint has {cfg.get('format_version')!r}")
    check_module_format(cfg.get("module_format_version"), CONFIG_NAME)
    for fqn, m in prepare_modules(model, cfg.get("modules"), CONFIG_NAME).items():  # all checked first
        replace_module(model, fqn, m)
    return dict(cfg.get("aliases") or {})


def check_module_format(version, where: str) -> None:
    if version != FORMAT_VERSION:
        raise ValueError(f"{where}: this qkernels reads module format {FORMAT_VERSION}, the checkpoint has "
                         f"{version!r}")


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _expected_keys(model: nn.Module, loaded: set, only: set | None = None) -> tuple[set, set]:
    """(required, optional) state_dict keys of `model` (every name of a shared module), without
    computing a tensor; modules in `loaded` (and below) are complete already and expect nothing;
    `only`: just these modules' own keys. Optional: a packed module's OPTIONAL_WEIGHT_KEYS
    (input_perm of an act-order layer)."""
    keys, optional = set(), set()
    for name, m in model.named_modules(remove_duplicate=False):
        if _under(name, loaded) or (only is not None and name not in only):
            continue
        prefix = name + "." if name else ""
        keys.update(prefix + k for k, v in m._parameters.items() if v is not None)
        keys.update(prefix + k for k, v in m._buffers.items()
                    if v is not None and k not in m._non_persistent_buffers_set)
        if isinstance(m, PackedLinear):
            keys.update(prefix + k for k in m._weight_keys())
            optional.update(prefix + k for k in m.OPTIONAL_WEIGHT_KEYS)
    return keys - optional, optional


def load_tensors(model: nn.Module, files: TensorFiles, aliases: dict, cast: bool, loaded: set = frozenset(),
                 only: set | None = None) -> None:
    """Every tensor of the files into the model (`only`: into these modules, from their own keys),
    one module at a time, assigning (no float copy); ValueError naming what does not match."""
    expected, optional = _expected_keys(model, loaded, only)
    if only is not None:
        files.where = {k: v for k, v in files.where.items() if k.rpartition(".")[0] in only}
    stored = set(files.keys())
    missing = sorted(k for k in expected - stored if k not in aliases)
    unexpected = sorted(stored - expected - optional)
    bad_alias = sorted(k for k, v in aliases.items() if v not in stored or k not in expected)
    problems = []
    if missing:
        problems.append(f"the model has tensors the files lack: {name_list(missing)}")
    if unexpected:
        problems.append(f"the files have tensors the model lacks: {name_list(unexpected)}")
    if bad_alias:
        problems.append(f"{CONFIG_NAME} aliases name tensors that are not there: {name_list(bad_alias)}")
    if problems:
        raise ValueError("; ".join(problems))
    by_module: dict[str, list[str]] = {}
    for key in list(files.keys()) + list(aliases):
        by_module.setdefault(key.rpartition(".")[0], []).append(key)
    done, sources = {}, set(aliases.values())
    for prefix, keys in by_module.items():
        module = model.get_submodule(prefix) if prefix else model
        sd = {}
        for key in keys:
            src = aliases.get(key, key)
            t = done.get(src)
            if t is None:
                t = files.get(src)
                if cast:
                    t = _as_model_dtype(module, key.rpartition(".")[2], t)
                if src in sources:  # one tensor for every name of a tied parameter
                    done[src] = t
            sd[key] = t
        missing_keys, unexpected_keys, errors = [], [], []
        module._load_from_state_dict(sd, prefix + "." if prefix else "", {"assign_to_params_buffers": True},
                                     True, missing_keys, unexpected_keys, errors)
        if errors or unexpected_keys:
            raise ValueError(f"module {prefix!r}: " + "; ".join(errors + [f"unexpected {unexpected_keys}"]))


def _as_model_dtype(module: nn.Module, attr: str, t: torch.Tensor) -> torch.Tensor:
    ref = module._parameters.get(attr)
    if ref is None:
        ref = module._buffers.get(attr)
    if ref is not None and ref.dtype.is_floating_point and t.dtype.is_floating_point and t.dtype != ref.dtype:
        return t.to(ref.dtype)
    return t


# ---- buffers a checkpoint never holds ------------------------------------------------------------
@contextlib.contextmanager
def _parameters_on_meta():
    """Inside: every parameter a module registers goes to the meta device (no memory, no init),
    buffers stay where they are made, so a model can be built for its buffers alone."""
    register = nn.Module.register_parameter

    def on_meta(self, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _rebuild_missing_buffers(model: nn.Module) -> None:
    """Buffers still on the meta device after loading (non-persistent ones: rotary inv_freq,
    position_ids) are rebuilt by constructing the architecture again with its parameters on meta:
    for a transformers model type(model)(model.config). Anything still on meta is a ValueError."""
    left = [n for n, b in model.named_buffers() if b is not None and b.device.type == "meta"]
    config = getattr(model, "config", None)
    if left and config is not None and hasattr(type(model), "config_class"):
        with _parameters_on_meta(), torch.device("cpu"):
            fresh = type(model)(config)
        fresh_buffers = dict(fresh.named_buffers())
        for name in left:
            if name in fresh_buffers and fresh_buffers[name].device.type != "meta":
                prefix, _, attr = name.rpartition(".")
                model.get_submodule(prefix)._buffers[attr] = fresh_buffers[name]
        for m in model.modules():  # e.g. rotary embeddings keep a copy of inv_freq as an attribute
            for attr, v in list(vars(m).items()):
                if isinstance(v, torch.Tensor) and v.device.type == "meta" and not isinstance(v, nn.Parameter):
                    src = _same_place(fresh, model, m, attr)
                    if src is not None:
                        setattr(m, attr, src)
        left = [n for n, b in model.named_buffers() if b is not None and b.device.type == "meta"]
    params = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if left or params:
        raise ValueError("after loading, these are still on the meta device (not in the checkpoint, and not "
                         f"rebuildable): {name_list(left + params)}; build them on the CPU in the model")


def _same_place(fresh: nn.Module, model: nn.Module, m: nn.Module, attr: str):
    for name, mm in model.named_modules():
        if mm is m:
            v = getattr(fresh.get_submodule(name), attr, None)
            return v if isinstance(v, torch.Tensor) and v.device.type != "meta" else None
    return None


# ---- GPTQ / AWQ import ---------------------------------------------------------------------------
def _int4_params(kind: str, cfg: dict) -> dict:
    bits = cfg.get("bits", cfg.get("w_bit", 4))
    if bits != 4:
        raise NotImplementedError(f"{kind.upper()} checkpoint with bits={bits}: qkernels imports 4-bit "
                                  "GPTQ / AWQ checkpoints only")
    if kind == "awq":
        version = str(cfg.get("version", "gemm")).lower()
        if version != "gemm":
            raise NotImplementedError(f"AWQ checkpoint version {version!r}: qkernels imports the 'gemm' version only")
        if not cfg.get("zero_point", True):
            raise NotImplementedError("AWQ checkpoint with zero_point=false: qkernels imports AWQ with zero points")
        return {}
    fmt = str(cfg.get("checkpoint_format", "gptq")).lower()
    if fmt not in ("gptq", "gptq_v2"):
        raise NotImplementedError(f"GPTQ checkpoint_format {fmt!r}: qkernels imports 'gptq' and 'gptq_v2'")
    return {"legacy_zero_offset": fmt == "gptq"}


def _install_int4_import(model: nn.Module, kind: str, cfg: dict, files: TensorFiles) -> set:
    """Replace every layer with a .qweight in the files by its imported QuantLinear; returns their names."""
    params = _int4_params(kind, cfg)
    prefixes = sorted(k[: -len(".qweight")] for k in files.keys() if k.endswith(".qweight"))
    if not prefixes:
        raise ValueError(f"the {kind.upper()} checkpoint has no '.qweight' tensor")
    built = {}
    for fqn in prefixes:
        qweight, qzeros, scales = (files.get(f"{fqn}.{n}") for n in ("qweight", "qzeros", "scales"))
        if kind == "gptq":
            K, N = qweight.shape[0] * 8, qweight.shape[1]
        else:
            K, N = qweight.shape[0], qweight.shape[1] * 8
        check_target(model, fqn, K, N)
        bias = files.get(f"{fqn}.bias") if f"{fqn}.bias" in files else None
        try:
            if kind == "gptq":
                g_idx = files.get(f"{fqn}.g_idx") if f"{fqn}.g_idx" in files else None
                q = QuantLinear.from_gptq(qweight, qzeros, scales, g_idx, bias, **params)
            else:
                q = QuantLinear.from_awq(qweight, qzeros, scales, bias)
        except (TypeError, ValueError) as e:
            raise ValueError(f"module {fqn!r}: {e}") from e
        built[fqn] = q
    for fqn, q in built.items():
        replace_module(model, fqn, q)
    # the imported modules' own tensors are loaded already: drop them from what is left to read
    skip = {f"{fqn}.{n}" for fqn in built for n in ("qweight", "qzeros", "scales", "g_idx", "bias")}
    files.where = {k: v for k, v in files.where.items() if k not in skip}
    return set(built)
