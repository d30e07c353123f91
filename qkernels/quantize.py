"""Model-level API: quantize_ / sparsify_ swap a model's nn.Linear layers (and transformers'
GPT-2 style Conv1D) in place, all or nothing, with a progress bar and a summary for real models."""
from __future__ import annotations

import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .nn import QuantLinear, SparseLinear
from .nn.quant_linear import check_config, check_shape
from .nn.sparse_linear import _check_bits

log = logging.getLogger("qkernels")
PROGRESS_MIN_LAYERS = 16  # quantize_ shows a progress bar from this many layers on (progress=None)


METHODS = ("rtn", "gptq", "awq")
ACT_SCALES = ("dynamic", "static")
OBSERVERS = ("minmax", "percentile", "mse", "kl")


@dataclass(frozen=True)
class QuantConfig:
    """How quantize_ converts a layer; checked when built (ValueError for an invalid value).

    weight_bits, act_bits, group_size, symmetric: QuantLinear.from_float's arguments.
    method: "rtn" (round to nearest, with the int4 clipping search), "gptq" or "awq";
    act_scale: "dynamic" (per token at run time) or "static" (one calibrated per-tensor scale,
    act_bits=8) chosen by observer "minmax" | "percentile" | "mse" | "kl"; smooth_alpha:
    SmoothQuant migration strength (act_bits=8); act_order (GPTQ, grouped int4): process columns
    in decreasing Hessian diagonal, kept as the layer's input_perm. Everything but "rtn" with
    dynamic activations needs calibration_data (qkernels.calibration).
    """
    weight_bits: int = 8
    act_bits: Optional[int] = 8
    group_size: Optional[int] = None
    symmetric: bool = True
    method: str = "rtn"
    act_scale: str = "dynamic"
    observer: str = "minmax"
    smooth_alpha: Optional[float] = None
    act_order: bool = False

    def __post_init__(self):
        check_config(self.weight_bits, self.act_bits, self.group_size, self.symmetric)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.act_scale not in ACT_SCALES:
            raise ValueError(f"act_scale must be one of {ACT_SCALES}, got {self.act_scale!r}")
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {OBSERVERS}, got {self.observer!r}")
        if self.smooth_alpha is not None and (isinstance(self.smooth_alpha, bool) or not isinstance(
                self.smooth_alpha, (int, float)) or not 0.0 < self.smooth_alpha <= 1.0):
            raise ValueError(f"smooth_alpha must be None or a number in (0, 1], got {self.smooth_alpha!r}")
        if self.method == "awq" and self.smooth_alpha is not None:
            raise ValueError("method='awq' chooses its own smoothing; smooth_alpha (SmoothQuant) cannot be combined")
        if (self.act_scale == "static" or self.smooth_alpha is not None) and self.act_bits != 8:
            raise ValueError(f"act_scale='static' and smooth_alpha need act_bits=8, got act_bits={self.act_bits!r}")
        if not isinstance(self.act_order, bool):
            raise TypeError(f"act_order must be a bool, got {type(self.act_order).__name__}")
        if self.act_order and (self.method != "gptq" or self.group_size is None or self.weight_bits != 4):
            raise ValueError("act_order applies to method='gptq' with grouped int4 weights (weight_bits=4, "
                             f"group_size set); got method={self.method!r}, weight_bits={self.weight_bits}, "
                             f"group_size={self.group_size}")
    @property
    def calibrates(self) -> bool:
        """True when converting needs calibration data: method 'gptq' / 'awq', act_scale 'static'
        or smooth_alpha."""
        return self.method != "rtn" or self.act_scale == "static" or self.smooth_alpha is not None

    def check_layer(self, linear: nn.Linear) -> None:
        """ValueError if a QuantLinear of this configuration cannot be built for `linear`'s shape."""
        check_shape(linear.in_features, linear.out_features, self.weight_bits, self.act_bits, self.group_size)

    def convert(self, linear: nn.Linear) -> QuantLinear:
        """QuantLinear.from_float(linear) with this configuration."""
        return QuantLinear.from_float(linear, self.weight_bits, self.act_bits, self.group_size, self.symmetric)


@dataclass(frozen=True)
class SparseConfig:
    """How sparsify_ converts a layer (SparseLinear.from_float's arguments); checked when built."""
    weight_bits: Optional[int] = None

    def __post_init__(self):
        _check_bits(self.weight_bits)

    def check_layer(self, linear: nn.Linear) -> None:
        """ValueError if a SparseLinear of this configuration cannot be built for `linear`'s shape
        (the construction checks, run on the meta device: no memory, no values)."""
        SparseLinear(linear.in_features, linear.out_features, linear.bias is not None, self.weight_bits,
                     device="meta")

    def convert(self, linear: nn.Linear) -> SparseLinear:
        """SparseLinear.from_float(linear) with this configuration."""
        return SparseLinear.from_float(linear, self.weight_bits)


def is_conv1d(m: nn.Module) -> bool:
    """transformers.pytorch_utils.Conv1D (GPT-2 style: weight stored [in, out]), duck-typed."""
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and getattr(m, "weight", None) is not None \
        and m.weight.dim() == 2


def _convertible(m: nn.Module) -> bool:
    # nn.MultiheadAttention reads its out_proj (a NonDynamicallyQuantizableLinear) through
    # .weight / .bias, never by calling it, so that one Linear subclass cannot be swapped.
    if isinstance(m, nn.Linear):
        return not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)
    return is_conv1d(m)


def _linear_like(m: nn.Module) -> bool:
    """A layer a user would expect quantize_ to consider (warned about when it stays float)."""
    return isinstance(m, nn.Linear) or is_conv1d(m) or "linear" in type(m).__name__.lower()


def as_linear(m: nn.Module) -> nn.Linear:
    """An nn.Linear computing what `m` computes (m itself, or a Conv1D's weight transposed as a
    view: no copy), for from_float."""
    if isinstance(m, nn.Linear):
        return m
    n_in, n_out = m.weight.shape
    lin = nn.Linear(n_in, n_out, bias=m.bias is not None, device="meta", dtype=m.weight.dtype)
    lin.weight = nn.Parameter(m.weight.detach().t(), requires_grad=False)
    if m.bias is not None:
        lin.bias = nn.Parameter(m.bias.detach(), requires_grad=False)
    return lin


def set_module(model: nn.Module, fqns, new: nn.Module) -> None:
    """Put `new` at each fully qualified name in fqns (every place a shared module is used)."""
    for fqn in fqns:
        parent, _, child = fqn.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)


def _tied(model: nn.Module) -> dict[int, str]:
    """{id(module): 'name of the other owner'} for layers whose weight is also another module's
    parameter (a tied lm_head shares the input embedding's weight)."""
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    for fqn, m in model.named_modules(remove_duplicate=False):
        for pname, p in m._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((f"{fqn}.{pname}" if fqn else pname, m))
    tied = {}
    for m in model.modules():
        w = getattr(m, "weight", None)
        if _convertible(m) and isinstance(w, nn.Parameter):
            others = [name for name, o in owners.get(id(w), []) if o is not m]
            if others:
                tied[id(m)] = others[0]
    return tied


def _plan(model: nn.Module, config, config_type, filter_fn):
    """[(linear, its config, every fully qualified name it has)] for the layers to convert."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    names: dict[int, tuple[nn.Module, list[str]]] = {}
    for fqn, m in model.named_modules(remove_duplicate=False):
        if _convertible(m):
            names.setdefault(id(m), (m, []))[1].append(fqn)
    if isinstance(config, dict):
        if filter_fn is not None:
            raise ValueError("pass either a per-layer config dict or filter_fn, not both")
        known = {fqn for _, fqns in names.values() for fqn in fqns}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"config names layers that are not convertible nn.Linear modules of the model: {unknown}")
        for fqn, c in config.items():
            if c is not None and not isinstance(c, config_type):
                raise TypeError(f"config[{fqn!r}] must be a {config_type.__name__} or None, got {type(c).__name__}")
        pick = lambda m, fqn: config.get(fqn)  # noqa: E731
    elif isinstance(config, config_type):
        pick = lambda m, fqn: config if filter_fn is None or filter_fn(m, fqn) else None  # noqa: E731
    else:
        raise TypeError(f"config must be a {config_type.__name__} or a dict {{name: {config_type.__name__} "
                        f"or None}}, got {type(config).__name__}")
    tied = _tied(model)
    plan, left_tied = [], []
    for m, fqns in names.values():
        chosen = [pick(m, fqn) for fqn in fqns]
        if any(c != chosen[0] for c in chosen):
            raise ValueError(f"the module at {fqns} is shared but would get different configurations "
                             f"{chosen}; it is one module, so it gets one")
        if chosen[0] is not None:
            if "" in fqns:
                raise TypeError("model is itself an nn.Linear; use QuantLinear.from_float(model) or "
                                "SparseLinear.from_float(model) instead")
            if id(m) in tied and not isinstance(config, dict):
                # as transformers does: a tied lm_head stays float (quantizing it would keep the float
                # embedding and add a quantized copy); name it in a per-layer dict to convert it anyway
                left_tied.append(f"{fqns[0]} (tied to {tied[id(m)]})")
                continue
            plan.append((m, chosen[0], fqns))
    return plan, left_tied


def _check(plan) -> None:
    """Every check a conversion makes, for every layer, before anything is replaced."""
    for m, cfg, fqns in plan:
        try:
            cfg.check_layer(as_linear(m))
            w = m.weight
            if w.device.type != "meta" and not bool(torch.isfinite(w.detach()).all()):
                raise ValueError("weight holds NaN or Inf")
        except (ValueError, TypeError, NotImplementedError) as e:
            raise type(e)(f"{fqns[0]}: {e} (nothing was replaced)") from e


@dataclass
class Summary:
    """What quantize_ / sparsify_ did: layers converted by kind, bytes before and after, time, and
    the Linear-like layers left float (with why)."""
    kinds: dict = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    left_float: list = field(default_factory=list)

    def __str__(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items())) or "no layer"
        text = (f"qkernels: converted {kinds} in {self.seconds:.1f} s; their weights "
                f"{self.bytes_before / 2**20:.1f} MiB -> {self.bytes_after / 2**20:.1f} MiB")
        if self.left_float:
            text += f"; left float: {name_list(self.left_float)}"
        return text


def name_list(items, n: int = 10) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _tensor_bytes(m: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))


def _kind(new: nn.Module) -> str:
    if isinstance(new, QuantLinear):
        return f"W{new.weight_bits}A{8 if new.act_bits == 8 else 16}"
    return "2:4 int8" if new.weight_bits == 8 else "2:4"


def _convert(model: nn.Module, config, config_type, filter_fn, progress, calibration_data=None) -> nn.Module:
    start = time.perf_counter()
    plan, left_tied = _plan(model, config, config_type, filter_fn)
    _check(plan)
    batches = None
    if any(getattr(cfg, "calibrates", False) for _, cfg, _ in plan):
        from . import calibration
        batches = calibration.check_batches(model, calibration_data)  # ValueError before any change
    in_plan = {id(m) for m, _, _ in plan}
    left = [f"{fqn} ({type(m).__name__}: not convertible)" for fqn, m in model.named_modules()
            if fqn and _linear_like(m) and not _convertible(m) and id(m) not in in_plan
            and (filter_fn is None or filter_fn(m, fqn)) and not isinstance(config, dict)]
    summary = Summary(left_float=left_tied + left)
    show = progress if progress is not None else len(plan) >= PROGRESS_MIN_LAYERS
    bar = None
    if show:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(plan), desc=f"qkernels.{'quantize_' if config_type is QuantConfig else 'sparsify_'}",
                       unit="layer", file=sys.stderr)
        except ImportError:
            bar = None
    while plan:
        m, cfg, fqns = plan.pop(0)
        summary.bytes_before += _tensor_bytes(m)
        if getattr(cfg, "calibrates", False):  # on the inputs it sees with the layers before it converted
            new = calibration.calibrated_layer(model, as_linear(m), cfg, batches)
        else:
            new = cfg.convert(as_linear(m))
        summary.bytes_after += _tensor_bytes(new)
        summary.kinds[_kind(new)] = summary.kinds.get(_kind(new), 0) + 1
        set_module(model, fqns, new)  # a module used at several places is replaced everywhere
        del m, new  # the float layer is freed now unless something else still holds it
        if bar is not None:
            bar.update(1)
    summary.seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    log.info("%s", summary)
    if show:
        print(summary, file=sys.stderr)
    if summary.left_float:
        warnings.warn(f"qkernels: these Linear-like layers stay float: {name_list(summary.left_float)}", stacklevel=3)
    model._qkernels_summary = summary  # noqa: SLF001 (read by tests and the main job)
    return model


def quantize_(model: nn.Module, config: QuantConfig | dict = QuantConfig(), filter_fn: Callable | None = None,
              progress: bool | None = None, calibration_data=None) -> nn.Module:
    """Replace (in place) every nn.Linear (subclasses included) and transformers Conv1D for which
    filter_fn(module, fqn) is True by a QuantLinear; returns the model.

    config: a QuantConfig for every selected layer, or a dict {fully qualified name: QuantConfig or
    None} (None or absent = keep float). Every layer is checked before any is replaced (all or
    nothing); a module used at several places becomes one QuantLinear used at all of them.
    A layer whose weight is tied to another module's (a tied lm_head) stays float unless a dict
    names it, as transformers does; nn.MultiheadAttention's out_proj is left alone (its parent reads
    .weight, never calls it); both are listed in a warning. progress: a tqdm bar and a printed
    summary (None: from PROGRESS_MIN_LAYERS layers on); the summary (layers by kind, bytes before
    and after, time) is logged to the "qkernels" logger and kept as model._qkernels_summary.

    calibration_data: an iterable of model inputs (a tensor, a tuple of positional args or a dict
    of kwargs per batch), required when a config calibrates (method "gptq"): the first batch is
    run through the model before anything changes (ValueError if it cannot take it); layers are
    then converted in model order, each calibrated on the inputs it receives with the layers before
    it already quantized.
    """
    return _convert(model, config, QuantConfig, filter_fn, progress, calibration_data)


def sparsify_(model: nn.Module, config: SparseConfig | dict = SparseConfig(), filter_fn: Callable | None = None,
              progress: bool | None = None) -> nn.Module:
    """Replace (in place) every selected nn.Linear by a 2:4 SparseLinear; as quantize_ (a SparseConfig
    or a dict {name: SparseConfig or None}, all or nothing, shared modules stay shared)."""
    return _convert(model, config, SparseConfig, filter_fn, progress)
