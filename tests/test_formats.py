"""qkernels.formats: the production packers and quantizers equal the reference oracle, the layout
registry agrees with the C++ library, and the CUDA blob parts tile their blob."""
import pytest
import torch

from qkernels import formats, ops
from qkernels import reference as R


@pytest.mark.parametrize("K", [1, 7, 8, 67, 300])
def test_nibbles_match_the_reference(K):
    for signed, lo, hi in ((True, -8, 8), (False, 0, 16)):
        q = torch.randint(lo, hi, (9, K), dtype=torch.int8)
        packed = formats.pack_nibbles(q)
        assert torch.equal(packed, R.pack_int4(q))
        assert torch.equal(formats.unpack_nibbles(packed, K, signed), q)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [8, 32, 128, None])
def test_int4_quantizer_matches_the_reference(symmetric, group_size):
    w = torch.randn(70, 300) * torch.rand(70, 1) * 3
    w[3] = 0  # an all-zero row
    got = formats.quantize_weight_int4(w, group_size, symmetric, rows_per_chunk=16)  # several chunks
    want = R.quantize_weight_int4(w, group_size, symmetric)
    for g, e in zip(got, want):
        assert (g is None and e is None) or torch.equal(g, e)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size,K", [(8, 300), (32, 67), (128, 4096), (None, 301), (48, 100), (8, 1)])
def test_int4_quantizer_op_matches_the_reference(symmetric, group_size, K):
    """The C++ clipping search (what QuantLinear.from_float runs on the CPU) returns the reference's
    nibbles, scales and zero points exactly: ties, zero rows, tiny and large magnitudes, partial groups."""
    g = torch.Generator().manual_seed(K)
    w = torch.randn(67, K, generator=g) * torch.rand(67, 1, generator=g) * 3
    w[3] = 0
    w[4] *= 1e-30
    w[5] *= 1e30
    w[6, : min(K, 8)] = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.0, 0.0, -1.0, 1.0])[: min(K, 8)]
    got = ops.quantize_int4_weight(w, group_size, symmetric)
    q, s, z = R.quantize_weight_int4(w, group_size, symmetric)
    assert torch.equal(got[0], R.pack_int4(q))
    assert torch.equal(got[1], s)
    assert (got[2] is None and z is None) or torch.equal(got[2], z)


@pytest.mark.parametrize("K", [4, 7, 66, 129])
def test_pruning_and_compression_match_the_reference(K):
    w = torch.randn(33, K)
    w[:, :min(K, 8)] = torch.tensor([1.0, -1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 2.0])[:min(K, 8)]  # ties, empty groups
    m, p = formats.prune_24(w)
    mr, pr = R.prune_24(w)
    assert torch.equal(m, mr) and torch.equal(p, pr)
    for dtype in (torch.float32, torch.bfloat16):
        v, meta = formats.compress_24(w.to(dtype))
        vr, metar = R.compress_24(w.to(dtype))
        assert torch.equal(v, vr) and torch.equal(meta, metar)
    assert formats.is_24(p) and formats.is_24(w) == R.is_24(w)


def test_layouts_agree_with_the_cpp_library():
    from qkernels import _C
    cpu = {t for t, lay in formats.LAYOUTS.items() if lay.device == "cpu"}
    assert cpu == set(_C.cpu_layouts())
    assert formats.get("int4_panels").shape(130, 300, 128) == (3, 3 * (32 * 128 + 320))
    assert formats.get("int8_w8a8_panels").shape(64, 5) == (1, 8 * 64 + 256)
    assert formats.get("sparse24_panels").shape(65, 33, esize=2) == (2, 2 * (256 + 1024 * 2))
    assert formats.get("sparse24_panels").shape(65, 33, esize=1) == (2, 2 * (256 + 1024) + 256)  # + colsum
    assert formats.int4_groups(300, 128) == (3, 128) and formats.int4_groups(13, 13) == (1, 16)
    with pytest.raises(ValueError, match="unknown packed layout 'int4_tiles'"):
        formats.get("int4_tiles")
    assert formats.layout_for("int8", "cpu", 8).tag == "int8_w8a8_panels"
    assert formats.layout_for("int4", "cuda").tag == "int4_blob"
    assert formats.layout_for("sparse24", "meta").tag == "sparse24_panels"


@pytest.mark.parametrize("N,K,gs", [(1, 1, 1), (7, 67, 32), (64, 4096, 128)])
def test_cuda_blob_parts_tile_the_blob(N, K, gs):
    G = formats.int4_groups(K, gs)[0]
    p = formats.int4_blob_parts(N, K, G)
    assert p.scale == 0 and p.zz == 4 * N * G and p.nibbles >= p.zz + N * G and p.nibbles % 4 == 0
    assert p.total == p.nibbles + N * ((K + 1) // 2) == formats.get("int4_blob").shape(N, K, gs)[0]
    s = formats.sparse24_blob_parts(N, K, 2)
    assert s.meta == N * 2 * (-(-K // 4)) * 2 and s.total == s.meta + N * ((-(-K // 4) + 1) // 2)
