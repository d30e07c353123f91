"""CPU and GPU peer implementations for the benchmark, each a (setup -> call) pair on shared data.

Every factory takes (x, w_fp32, many=False) and returns (callable, weight bytes): the callable
computes y = x @ W.T its own way from one weight copy. For DRAM (cold) timing the bench makes one
instance per weight copy and passes many=True.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from qkernels import QuantLinear, SparseLinear, ops, prune_24


def _per_channel_int8(w):
    q, s = ops.quantize_per_token_int8(w)
    return q, s


# ---- qkernels: the public modules, as users call them ---------------------------------------------
_MODULE_CACHE = {}


_INT4_CACHE = {}


def _int4_sym(w, group_size=128):
    """The symmetric int4 values (q in [-8, 7]) and fp32 scales [N, G] our W4 modules hold for w, so
    the int4 peers multiply by exactly the same weights; cached across the DRAM copies."""
    key = (tuple(w.shape), tuple(w[0, :8].tolist()), group_size)
    if key not in _INT4_CACHE:
        from qkernels import formats
        q, s, _ = formats.quantize_weight_int4(w.float().cpu(), group_size, True)
        _INT4_CACHE.clear()
        _INT4_CACHE[key] = (q, s)
    return _INT4_CACHE[key]


def _qk_module(cls, x_dtype=None, **kw):
    """A factory timing cls.from_float(Linear(w), **kw)(x). The module is built once per weight (int4's
    clipping search is slow on big layers) and deep-copied for each DRAM copy (its own memory).
    x_dtype: the activations' dtype (and, for 2:4 bf16, the Linear's, so the values are bf16)."""
    def make(x, w, many=False):
        import copy
        key = (cls.__name__, x_dtype, tuple(sorted(kw.items())), tuple(w.shape), tuple(w[0, :8].tolist()), str(w.device))
        if key not in _MODULE_CACHE:
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=torch.float32)
            with torch.no_grad():
                lin.weight.copy_(w)
            if cls is SparseLinear and x_dtype == torch.bfloat16:
                lin = lin.bfloat16()
            _MODULE_CACHE.clear()
            _MODULE_CACHE[key] = cls.from_float(lin, **kw)
        m = copy.deepcopy(_MODULE_CACHE[key]) if many else _MODULE_CACHE[key]
        xin = x.to(x_dtype) if x_dtype is not None else x
        return (lambda: m(xin)), m._packed.numel() * m._packed.element_size()
    return make


qk_w8a8 = _qk_module(QuantLinear, weight_bits=8, act_bits=8)
qk_w8a16 = _qk_module(QuantLinear, weight_bits=8, act_bits=None)
qk_w4a8 = _qk_module(QuantLinear, weight_bits=4, act_bits=8, group_size=128)
qk_w4a16 = _qk_module(QuantLinear, weight_bits=4, act_bits=None, group_size=128)
# bf16 activations into the weight-only kernels (the prefill case torch bf16 F.linear competes in)
qk_w8a16_bf16 = _qk_module(QuantLinear, torch.bfloat16, weight_bits=8, act_bits=None)
qk_w4a16_bf16 = _qk_module(QuantLinear, torch.bfloat16, weight_bits=4, act_bits=None, group_size=128)
# GPU int4 rows: fp16 activations, compared with cuBLAS fp16
qk_w4a8_fp16 = _qk_module(QuantLinear, torch.float16, weight_bits=4, act_bits=8, group_size=128)
qk_w4a16_fp16 = _qk_module(QuantLinear, torch.float16, weight_bits=4, act_bits=None, group_size=128)


def _qk_s24(kind):
    """qkernels 2:4: kind 'f32' (fp32 values, fp32 x), 'bf16' (bf16 values, bf16 x), 'int8'."""
    if kind == "int8":
        return _qk_module(SparseLinear, weight_bits=8)
    return _qk_module(SparseLinear, torch.bfloat16 if kind == "bf16" else None, weight_bits=None)


# ---- torch CPU peers ---------------------------------------------------------------------------
def torch_fp32(x, w, many=False):
    w = w.clone()
    return lambda: F.linear(x, w), w.numel() * 4


def torch_bf16(x, w, many=False):
    xb, wb = x.bfloat16(), w.bfloat16()
    return lambda: F.linear(xb, wb), wb.numel() * 2


def torch_ao_dynamic(x, w, many=False):
    import torch.ao.quantization as aq
    torch.backends.quantized.engine = "fbgemm"
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = aq.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
    return lambda: m(x), w.numel()


def torch_int_mm(x, w, many=False):
    """torch._int_mm with the same dynamic per-token activation quantization done in torch ops."""
    q, s = _per_channel_int8(w)
    qt = q.T.contiguous().T  # [K, N] column-major view, the layout _int_mm prefers

    def run():
        amax = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        a_s = amax / 127
        a = torch.round(x / a_s).clamp_(-127, 127).to(torch.int8)
        return torch._int_mm(a, qt.T).float() * a_s * s
    return run, q.numel()


def torch_int8pack(x, w, many=False):
    """bf16 activations: its fast CPU path (with fp32 activations it is far slower)."""
    q, s = _per_channel_int8(w)
    xb, sb = x.bfloat16(), s.bfloat16()
    return lambda: torch._weight_int8pack_mm(xb, q, sb), q.numel()


def torch_int4pack(x, w, many=False):
    """torch._weight_int4pack_mm_for_cpu, group 128, bf16 activations (its fast CPU path: fp32 and
    fp16 activations are 40-60x slower here). Dequant: (u - 8) * scale + zero, zero = 0."""
    q, s = _int4_sym(w)
    wp = torch._convert_weight_to_int4pack_for_cpu((q.int() + 8).contiguous(), 1)
    sz = torch.stack([s.T, torch.zeros_like(s.T)], dim=-1).contiguous().bfloat16()  # [G, N, 2]
    xb = x.bfloat16()
    return lambda: torch._weight_int4pack_mm_for_cpu(xb, wp, 128, sz), wp.numel() + sz.numel() * 2


# ---- onnxruntime (optional) --------------------------------------------------------------------
def _ort_run(node, initializers, x, N, many):
    """A one-node onnxruntime session y = node(A = x) with the weights as initializers -> callable."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    K = x.shape[1]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, K])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, N])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = min(model.ir_version, 10)  # what current onnxruntime releases accept
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    if many:
        # Dozens of sessions (one per weight copy) each own a thread pool; spinning idle pools
        # would steal the cores from the one running, so they block instead.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    xn = np.ascontiguousarray(x.numpy())
    return lambda: sess.run(None, {"A": xn})[0]


def ort_dynamic_quant_matmul(x, w, many=False):
    from onnx import TensorProto, helper

    q, s = _per_channel_int8(w)
    K, N = w.shape[1], w.shape[0]
    b = helper.make_tensor("B", TensorProto.INT8, [K, N], q.T.contiguous().numpy().tobytes(), raw=True)
    bs = helper.make_tensor("B_scale", TensorProto.FLOAT, [N], s.numpy().tobytes(), raw=True)
    bz = helper.make_tensor("B_zp", TensorProto.INT8, [N], bytes(N), raw=True)
    node = helper.make_node("DynamicQuantizeMatMul", ["A", "B", "B_scale", "B_zp"], ["Y"], domain="com.microsoft")
    return _ort_run(node, [b, bs, bz], x, N, many), q.numel()


# Its own thread pool: alternating calls with ATen/OpenMP kernels would make each runtime's
# spinning workers steal the cores from the other, so the bench times it in separate blocks.
ort_dynamic_quant_matmul.own_thread_pool = True


def ort_matmul_nbits(x, w, many=False):
    """onnxruntime MatMulNBits: 4-bit, block 128, accuracy_level 4 (int8 activations, its fastest)."""
    from onnx import TensorProto, helper

    q, s = _int4_sym(w)
    N, K = w.shape
    nb = -(-K // 128)
    u = torch.nn.functional.pad(q.int() + 8, (0, nb * 128 - K), value=8).to(torch.uint8)
    packed = (u[:, 0::2] | (u[:, 1::2] << 4)).reshape(N, nb, 64)  # low nibble = even k
    b = helper.make_tensor("B", TensorProto.UINT8, [N, nb, 64], packed.numpy().tobytes(), raw=True)
    bs = helper.make_tensor("scales", TensorProto.FLOAT, [N * nb], s.contiguous().numpy().tobytes(), raw=True)
    node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft",
                            K=K, N=N, bits=4, block_size=128, accuracy_level=4)
    return _ort_run(node, [b, bs], x, N, many), packed.numel() + s.numel() * 4


ort_matmul_nbits.own_thread_pool = True


def ort_available():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


CPU_W8A8 = {"qkernels W8A8": qk_w8a8}
CPU_W8A16 = {"qkernels W8A16": qk_w8a16}
CPU_PEERS = {
    "torch fp32 F.linear": torch_fp32,
    "torch bf16 F.linear": torch_bf16,
    "torch.ao dynamic int8 (fbgemm)": torch_ao_dynamic,
    "torch._int_mm + act quant": torch_int_mm,
    "torch._weight_int8pack_mm (bf16 act)": torch_int8pack,
}
if ort_available():
    CPU_PEERS["onnxruntime DynamicQuantizeMatMul"] = ort_dynamic_quant_matmul

CPU_S24 = {"qkernels 2:4 f32": _qk_s24("f32"), "qkernels 2:4 bf16": _qk_s24("bf16"),
           "qkernels 2:4 int8": _qk_s24("int8")}
CPU_PEERS_S24 = {"torch fp32 F.linear": torch_fp32, "torch bf16 F.linear": torch_bf16,
                 "qkernels W8A8 (dense)": qk_w8a8}
CPU_W4 = {"qkernels W4A8": qk_w4a8, "qkernels W4A16": qk_w4a16}
CPU_PEERS_W4 = {
    "torch fp32 F.linear": torch_fp32,
    "torch bf16 F.linear": torch_bf16,
    "torch._weight_int4pack_mm (bf16 act)": torch_int4pack,
}
if ort_available():
    CPU_PEERS_W4["onnxruntime MatMulNBits (acc lvl 4)"] = ort_matmul_nbits
# W4A8 at prefill is held to the best int8-weight peer (int8 activations, no AMX): those peers join
# the int4 suite from PREFILL_M rows on, so its ratio comes from one window like every other.
PREFILL_M = 32
CPU_PEERS_W4_PREFILL = {n: CPU_PEERS[n] for n in ("torch.ao dynamic int8 (fbgemm)", "torch._int_mm + act quant",
                                                  "onnxruntime DynamicQuantizeMatMul") if n in CPU_PEERS}
CPU_BF16 = {"qkernels W8A16 (bf16 act)": qk_w8a16_bf16, "qkernels W4A16 (bf16 act)": qk_w4a16_bf16}
CPU_PEERS_BF16 = {"torch bf16 F.linear": torch_bf16, "torch._weight_int8pack_mm (bf16 act)": torch_int8pack,
                  "torch._weight_int4pack_mm (bf16 act)": torch_int4pack}


# ---- GPU peers ---------------------------------------------------------------------------------
def cublas_bf16(x, w, many=False):
    xb, wb = x.bfloat16(), w.bfloat16()
    return lambda: torch.matmul(xb, wb.T), wb.numel() * 2


def cublas_fp16(x, w, many=False):
    xh, wh = x.half(), w.half()
    return lambda: torch.matmul(xh, wh.T), wh.numel() * 2


def cublas_int8(x, w, many=False):
    q, s = _per_channel_int8(w)
    qt = q.T  # _int_mm wants [K, N] column-major on CUDA; M must be > 16

    def run():
        a, a_s = ops.quantize_per_token_int8(x)
        return torch._int_mm(a, qt).float() * a_s[:, None] * s
    return run, q.numel()


GPU_OURS = {"qkernels W8A8 (Triton)": qk_w8a8, "qkernels W8A16 (Triton)": qk_w8a16}
GPU_W4 = {"qkernels W4A16 (Triton)": qk_w4a16_fp16, "qkernels W4A8 (Triton)": qk_w4a8_fp16}


def cusparselt_bf16(x, w, many=False):
    """torch semi-structured (cuSPARSELt / CUTLASS) 2:4 with bf16 values and activations."""
    from torch.sparse import to_sparse_semi_structured
    ws = to_sparse_semi_structured(prune_24(w)[1].bfloat16())
    xb = x.bfloat16()
    return lambda: F.linear(xb, ws), w.numel()


GPU_S24 = {"qkernels 2:4 bf16 (Triton)": _qk_s24("bf16"), "qkernels 2:4 int8 (Triton)": _qk_s24("int8")}
GPU_PEERS_S24 = {"cuBLAS bf16 torch.matmul": cublas_bf16, "cuSPARSELt bf16 (semi-structured)": cusparselt_bf16}
GPU_PEERS = {"cuBLAS fp16 torch.matmul": cublas_fp16, "cuBLAS bf16 torch.matmul": cublas_bf16,
             "cuBLAS int8 torch._int_mm": cublas_int8}
