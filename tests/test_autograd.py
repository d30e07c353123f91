"""Gradients flow to the input of every QuantLinear / SparseLinear kind through the dequantized
weight (weights frozen), on both backends, CPU and CUDA, compiled too: dL/dx = dL/dy @ dequantize()."""
import pytest
import torch
from torch import nn

import qkernels
from qkernels import QuantLinear, SparseLinear
from tolerances import CLOSE_FP32

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _act_order(lin):
    q = QuantLinear.from_float(lin, weight_bits=4, act_bits=None, group_size=16, symmetric=False)
    qw, s, zp = q._int4_tensors()
    from qkernels import reference as R
    perm = torch.randperm(lin.in_features)
    return QuantLinear.from_int4(R.unpack_int4(qw, lin.in_features, signed=False), s, zp, 16, q.bias,
                                 input_perm=perm)


KINDS = {
    "W8A8": lambda l: QuantLinear.from_float(l),
    "W8A16": lambda l: QuantLinear.from_float(l, act_bits=None),
    "W4A8 g16": lambda l: QuantLinear.from_float(l, weight_bits=4, group_size=16),
    "W4A16 asym g16": lambda l: QuantLinear.from_float(l, weight_bits=4, act_bits=None, group_size=16,
                                                        symmetric=False),
    "W4A16 per-channel": lambda l: QuantLinear.from_float(l, weight_bits=4, act_bits=None),
    "W4A16 act-order": _act_order,
    "2:4 fp32": lambda l: SparseLinear.from_float(l),
    "2:4 bf16": lambda l: SparseLinear.from_float(l.bfloat16()),
    "2:4 int8": lambda l: SparseLinear.from_float(l, weight_bits=8),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", KINDS)
def test_input_gradient_is_through_the_dequantized_weight(kind, dtype, backend, device):
    lin = nn.Linear(48, 40)
    q = KINDS[kind](lin).to(device)
    x = torch.randn(2, 3, 48, device=device, dtype=dtype, requires_grad=True)
    gy = torch.randn(2, 3, 40, device=device)
    with qkernels.use_backend(backend):
        y = q(x)
    y.backward(gy.to(y.dtype))
    x2 = x.detach().clone().requires_grad_()
    (x2.float() @ q.dequantize().T).backward(gy.to(y.dtype).float())
    assert x.grad is not None and x.grad.dtype == dtype
    assert torch.equal(x.grad, x2.grad)
    assert list(q.parameters()) == [] and all(not b.requires_grad for b in q.buffers())


def test_lora_adapter_upstream_trains():
    """A trainable adapter before a frozen quantized layer gets the gradient a float layer with the
    dequantized weight would give it."""
    q = QuantLinear.from_float(nn.Linear(32, 16), weight_bits=4, act_bits=8, group_size=16)
    adapter = nn.Linear(32, 32)
    x, c = torch.randn(5, 32), torch.randn(5, 16)
    (q(adapter(x)) * c).sum().backward()
    got = adapter.weight.grad.clone()
    adapter.zero_grad()
    ((adapter(x) @ q.dequantize().T) * c).sum().backward()
    torch.testing.assert_close(adapter.weight.grad, got, **CLOSE_FP32)
    assert got.abs().sum() > 0


@pytest.mark.parametrize("kind", ["W8A8", "W4A16 asym g16", "2:4 int8"])
def test_compiled_forward_and_backward(kind):
    q = KINDS[kind](nn.Linear(48, 40))
    x = torch.randn(3, 48, requires_grad=True)
    compiled = torch.compile(q, fullgraph=True)
    y = compiled(x)
    y.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    q(x2).sum().backward()
    assert torch.equal(y, q(x)) and torch.equal(x.grad, x2.grad)


def test_no_gradient_work_without_requires_grad():
    q = QuantLinear.from_float(nn.Linear(16, 8))
    y = q(torch.randn(2, 16))
    assert y.grad_fn is None
    with qkernels.use_backend("reference"):
        assert q(torch.randn(2, 16)).grad_fn is None


@pytest.mark.parametrize("kind", KINDS)
def test_calls_that_record_no_graph_run_the_same_kernel(kind):
    """Grad mode off, or no argument that requires grad: the op skips the autograd node (C++
    records_graph) and returns the same numbers as a call that records one."""
    q = KINDS[kind](nn.Linear(48, 40))
    x = torch.randn(3, 48, requires_grad=True)
    y = q(x)
    assert y.grad_fn is not None
    with torch.no_grad():
        y0 = q(x)
    assert y0.grad_fn is None and not y0.requires_grad
    assert torch.equal(y0, y.detach()) and torch.equal(q(x.detach()), y0)
