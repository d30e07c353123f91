"""Hugging Face transformers integration: the "qkernels" quantization method.

    from qkernels.hf import QKernelsConfig          # importing qkernels registers it with transformers
    cfg = QKernelsConfig(weight_bits=4, act_bits=8, group_size=128, symmetric=True)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=cfg)   # quantizes while loading
    model.save_pretrained(dst)        # the quantized tensors + config.json "quantization_config"
    model = AutoModelForCausalLM.from_pretrained(dst)                            # loads them as they are

Quantizing while loading runs qkernels.quantize_ on the loaded model (the same result as calling it
yourself), skipping `modules_to_not_convert` (default ["lm_head"]; an entry skips every module whose
dotted name contains it as whole components: "mlp" skips "model.layers.0.mlp.up_proj"). The saved quantization_config records
every quantized module's kind and configuration (as qkernels_config.json does), so loading builds
each QuantLinear / SparseLinear before its tensors are read and never materializes a float weight.
Nothing here runs unless transformers is installed.
"""
from __future__ import annotations

import os
import re

from torch import nn

from .files import TensorFiles, check_module_format, load_tensors, module_config, prepare_modules, replace_module
from .nn._common import FORMAT_VERSION, PackedLinear
from .quantize import QuantConfig, quantize_

try:
    from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
    from transformers.utils.quantization_config import QuantizationConfigMixin
    HAVE_TRANSFORMERS = True
except ImportError:  # pragma: no cover - transformers is in requirements.txt
    HAVE_TRANSFORMERS = False
    QuantizationConfigMixin = object

METHOD = "qkernels"
__all__ = ["METHOD", "QKernelsConfig"] + (["QKernelsHfQuantizer"] if HAVE_TRANSFORMERS else [])


def _skipped(name: str, patterns) -> bool:
    """True when a pattern is a run of whole components of the dotted name ("mlp" matches
    "model.layers.0.mlp.up_proj", "lm_head" matches "lm_head"; "mlp" never matches "mlp2")."""
    return any(f".{p}." in f".{name}." for p in patterns)


class QKernelsConfig(QuantizationConfigMixin):
    """quantization_config for from_pretrained: QuantLinear's configuration for every linear layer
    except `modules_to_not_convert` (default ["lm_head"]). Checked when built (ValueError)."""

    def __init__(self, weight_bits: int = 8, act_bits: int | None = 8, group_size: int | None = None,
                 symmetric: bool = True, modules_to_not_convert: list | None = None, modules: dict | None = None,
                 module_format_version: int = FORMAT_VERSION, **kwargs):
        self.quant_method = METHOD
        self.weight_bits, self.act_bits, self.group_size, self.symmetric = weight_bits, act_bits, group_size, symmetric
        self.modules_to_not_convert = ["lm_head"] if modules_to_not_convert is None else list(modules_to_not_convert)
        self.modules = dict(modules or {})  # {name: qkernels_config.json entry}, written when saved
        self.module_format_version = module_format_version
        self.quant_config()  # the checks

    def quant_config(self) -> QuantConfig:
        """The QuantConfig every converted layer gets."""
        return QuantConfig(self.weight_bits, self.act_bits, self.group_size, self.symmetric)

    def to_dict(self) -> dict:
        """The JSON form written into config.json's quantization_config (modules included)."""
        return {"quant_method": METHOD, "weight_bits": self.weight_bits, "act_bits": self.act_bits,
                "group_size": self.group_size, "symmetric": self.symmetric,
                "modules_to_not_convert": list(self.modules_to_not_convert), "modules": dict(self.modules),
                "module_format_version": self.module_format_version}

    def __repr__(self) -> str:
        d = self.to_dict()
        d["modules"] = f"<{len(self.modules)} modules>"
        return f"QKernelsConfig({d})"


class _Pending(nn.Module):
    """Where a quantized module goes while transformers loads the other tensors."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("qkernels: this quantized module was not loaded (from_pretrained did not finish)")


if HAVE_TRANSFORMERS:
    class QKernelsHfQuantizer(HfQuantizer):
        """transformers' side of the "qkernels" method (see the module docstring)."""

        requires_calibration = False

        def __init__(self, quantization_config, **kwargs):
            super().__init__(quantization_config, **kwargs)
            self._files, self._modules = None, {}

        def validate_environment(self, *args, **kwargs):
            """Nothing to check: the CPU kernels are built in, CUDA needs Triton at the first call."""
            return

        def is_serializable(self):
            """save_pretrained writes the quantized tensors and the quantization_config."""
            return True

        @property
        def is_trainable(self) -> bool:
            """The quantized weights are frozen (gradients reach the inputs: adapters train)."""
            return False

        def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
            # pre-quantized: placeholders where the quantized modules go (checked against the model)
            if not self.pre_quantized:
                return model
            cfg = self.quantization_config
            check_module_format(cfg.module_format_version, "quantization_config")
            self._modules = prepare_modules(model, cfg.modules, "quantization_config")  # all checked first
            for fqn in self._modules:
                replace_module(model, fqn, _Pending())
            # transformers sets parameters and buffers by name, which a packed weight does not have:
            # until the rest is loaded the modules are placeholders without tensors, then they are
            # built and read their own tensors (after_weight_loading), so their names are ignored here
            quantized = [re.escape(fqn) + r"\." for fqn in cfg.modules]
            model._keys_to_ignore_on_load_unexpected = set(model._keys_to_ignore_on_load_unexpected or []) | set(quantized)
            model._keys_to_ignore_on_load_missing = set(model._keys_to_ignore_on_load_missing or []) | set(quantized)
            if not checkpoint_files:
                raise ValueError("qkernels: transformers gave no checkpoint files to read the quantized tensors from")
            self._files = sorted({os.path.dirname(f) for f in checkpoint_files})
            return model

        def _process_model_after_weight_loading(self, model, **kwargs):
            cfg = self.quantization_config
            if self.pre_quantized:
                for fqn, m in self._modules.items():
                    replace_module(model, fqn, m)
                load_tensors(model, TensorFiles(self._files[0]), {}, False, only=set(cfg.modules))
                return model
            skip = cfg.modules_to_not_convert
            quantize_(model, cfg.quant_config(), filter_fn=lambda m, name: not _skipped(name, skip))
            cfg.modules = {fqn: module_config(m) for fqn, m in model.named_modules() if isinstance(m, PackedLinear)}
            return model

    register_quantization_config(METHOD)(QKernelsConfig)
    register_quantizer(METHOD)(QKernelsHfQuantizer)
