"""Exactness of the blocked, batched MNN against the plain full-matrix fp32 reference (``mnn_pairs``).

Adversarial data puts many rows and columns inside the screen's error bound (exact ties, near
duplicates at gaps from 1e-6 to 3e-2), where a screen without the exact settle gets counts wrong.
"""

import numpy as np
import pytest
import torch

from vpr_ros.core.config import VerifyConfig
from vpr_ros.core.errors import InputError
from vpr_ros.core.matching.mnn_batched import NumpyFp32Gemm, error_bound, mnn_counts_many, mnn_pairs_many
from vpr_ros.core.matching import mnn_kernels
from vpr_ros.core.matching.mnn_bounds import bf16_round as _bf16
from vpr_ros.core.types import Candidate
from vpr_ros.core.matching.verification import Verifier, mnn_count, mnn_pairs
from vpr_ros.models.backends.mnn_screen import SCREENS as PRECISIONS
from vpr_ros.models.backends import mnn_screen


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def row_pass(request, monkeypatch):
    """Every test runs with the compiled kernels (numba, pinned in requirements/base.txt) and with
    the numpy fallback that runs where numba is missing."""
    assert mnn_kernels.AVAILABLE, "numba is pinned in requirements/base.txt; run scripts/setup.sh"
    if request.param == "numpy":
        monkeypatch.setattr(mnn_kernels, "AVAILABLE", False)
    return request.param


def screen(name):
    """Every screen explicitly (numpy's fp32 too), so small maps do not take the plain path."""
    return NumpyFp32Gemm if name == "fp32" else mnn_screen.screen(name)


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _smooth(rng, h, c, base):
    """A smooth random map like SelaVPR's upsampled local features (many near-ties between neighbours)."""
    z = torch.from_numpy(rng.standard_normal((1, c, base, base)).astype(np.float32))
    up = torch.nn.functional.interpolate(z, size=(h, h), mode="bilinear", align_corners=False)
    return _unit(up[0].permute(1, 2, 0).numpy() + 0.05 * rng.standard_normal((h, h, c)).astype(np.float32))


def _assert_same(local0, locals1, precision, **kw):
    got = mnn_pairs_many(local0, locals1, screen(precision) if isinstance(precision, str) else precision, **kw)
    for k, local1 in enumerate(locals1):
        ref0, ref1 = mnn_pairs(local0, local1)
        assert np.array_equal(got[k][0], ref0) and np.array_equal(got[k][1], ref1), (precision, k)
    return got


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("h,c,k", [(1, 4, 1), (3, 8, 2), (12, 32, 5), (20, 112, 4)])
def test_equals_reference_on_smooth_and_random_maps(precision, h, c, k):
    rng = np.random.default_rng(h * 100 + k)
    q = _smooth(rng, h, c, max(2, h // 4))
    cands = [_unit(q + 0.3 * rng.standard_normal(q.shape).astype(np.float32)) if i % 2 else
             _unit(rng.standard_normal((h, h, c)).astype(np.float32)) for i in range(k)]
    _assert_same(q, cands, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tiny_blocks_still_exact(precision):
    """Blocks of 32 query rows and one candidate: the column maxima span many blocks."""
    rng = np.random.default_rng(1)
    q = _smooth(rng, 16, 24, 4)
    cands = [_unit(np.roll(q, 1, axis=0) + 0.2 * rng.standard_normal(q.shape).astype(np.float32)) for _ in range(3)]
    _assert_same(q, cands, precision, block_bytes=1024)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_exact_ties_resolve_to_first_index(precision):
    """Sign vectors / sqrt(c): every dot product is a multiple of 1/c, exact in fp32 in any order, so
    rows and columns are full of exact ties, which the reference breaks to the first index."""
    rng = np.random.default_rng(2)
    c = 16
    q = (rng.choice([-1.0, 1.0], (9, 9, c)) / 4.0).astype(np.float32)
    cands = [(rng.choice([-1.0, 1.0], (9, 9, c)) / 4.0).astype(np.float32) for _ in range(3)]
    cands.append(np.concatenate([q[:, :4], q[:, :5]], axis=1))  # duplicated columns of the query
    sim = q.reshape(-1, c) @ cands[0].reshape(-1, c).T
    assert (np.sort(sim, 1)[:, -1] == np.sort(sim, 1)[:, -2]).mean() > 0.3  # ties really are there
    got = _assert_same(q, cands, precision)
    assert len(got[3][0]) > 0


@pytest.mark.parametrize("precision", PRECISIONS)
def test_near_duplicates_inside_the_bound(precision):
    """Candidate columns duplicated with perturbations from 3e-5 to 3e-2 (and some exact copies):
    most rows' top-2 margins fall inside the bf16 bound and must be settled exactly. (Below ~1e-6
    the reference's own choice is BLAS rounding noise; see the next test.)"""
    rng = np.random.default_rng(3)
    h, c = 14, 64
    q = _unit(rng.standard_normal((h, h, c)).astype(np.float32))
    f0 = q.reshape(-1, c)
    cands = []
    for _ in range(3):
        base = _unit(f0[rng.permutation(len(f0))] + 0.3 * rng.standard_normal(f0.shape).astype(np.float32))
        scale = 10.0 ** rng.uniform(-4.5, -1.5, (len(f0), 1))
        twin = _unit(base + scale * rng.standard_normal(f0.shape))
        twin[::7] = base[::7]  # exact copies: exact ties
        cands.append(np.concatenate([base, twin])[rng.permutation(2 * len(f0))].reshape(2 * h, h, c))
    e = error_bound(f0, cands[0].reshape(-1, c), "bf16")
    sim = np.sort(f0 @ cands[0].reshape(-1, c).T, axis=1)
    assert ((sim[:, -1] - sim[:, -2]) < 2 * e).mean() > 0.5
    _assert_same(q, cands, precision)
    # Near-duplicate query rows too, so columns are ambiguous as well.
    q2 = q.copy()
    q2[1::2] = _unit(q2[::2][: q2[1::2].shape[0]] + 1e-4 * rng.standard_normal(q2[1::2].shape))
    _assert_same(q2, cands, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_selavpr_sized_maps(precision):
    """61x61x128 maps (SelaVPR), blocks of 2 MB: a revisit and an unrelated place."""
    rng = np.random.default_rng(10)
    q = _smooth(rng, 61, 128, 16)
    cands = [_unit(q + 0.3 * rng.standard_normal(q.shape).astype(np.float32)), _smooth(rng, 61, 128, 16)]
    got = _assert_same(q, cands, precision)
    assert len(got[0][0]) > 300


def _rounded_reference(local0, local1):
    """MNN on the correctly rounded fp32 similarities (float64 product rounded once), first index."""
    f0, f1 = (x.reshape(-1, x.shape[2]).astype(np.float64) for x in (local0, local1))
    sim = (f0 @ f1.T).astype(np.float32)
    best1, best0 = sim.argmax(1), sim.argmax(0)
    mutual = best0[best1] == np.arange(len(f0))
    return np.nonzero(mutual)[0], best1[mutual]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_sub_ulp_ties_follow_correctly_rounded_values(precision):
    """Twins one fp32 rounding apart: numpy's fp32 GEMM decides these by its blocking and thread
    count (its values match the correctly rounded product in only ~15-20 % of entries), so the
    defined answer is the correctly rounded fp32 value with the first index on ties."""
    rng = np.random.default_rng(8)
    h, c = 10, 32
    q = _unit(rng.standard_normal((h, h, c)).astype(np.float32))
    base = _unit(q + 0.3 * rng.standard_normal(q.shape).astype(np.float32))
    twin = _unit(base + 1e-7 * rng.standard_normal(base.shape))
    cand = np.concatenate([base, twin], axis=0)
    got = mnn_pairs_many(q, [cand], screen(precision))[0]
    want = _rounded_reference(q, cand)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_negative_similarities_and_quirk(precision):
    """Rows and columns whose every similarity is negative (bf16 keys order negatives backwards)."""
    rng = np.random.default_rng(4)
    d = _unit(rng.standard_normal((1, 1, 8)).astype(np.float32))
    q = _unit(d + 0.1 * rng.standard_normal((3, 3, 8)).astype(np.float32))
    cand = _unit(-d + 0.1 * rng.standard_normal((2, 3, 8)).astype(np.float32))
    assert (q.reshape(-1, 8) @ cand.reshape(-1, 8).T).max() < 0
    _assert_same(q, [cand, q], precision)
    a = np.array([[[1.0, 0.0], [1.0, 0.0]]], np.float32)
    b = np.array([[[1.0, 0.0]]], np.float32)
    assert mnn_counts_many(a, [b, a], screen(precision)) == [mnn_count(a, b), mnn_count(a, a)] == [0, 0]
    eye = np.eye(2, dtype=np.float32)[None]
    assert mnn_counts_many(eye, [eye], screen(precision)) == [mnn_count(eye, eye)] == [2]


def test_bf16_bound_holds():
    """The derived bound covers the actual bf16-screen error (worst case over 2e6 pairs)."""
    rng = np.random.default_rng(5)
    f0 = _unit(rng.standard_normal((1000, 128)).astype(np.float32))
    f1 = _unit(np.concatenate([f0[:500] + 0.01 * rng.standard_normal((500, 128)),
                               rng.standard_normal((1500, 128))]).astype(np.float32))
    screen = (torch.from_numpy(f0).bfloat16() @ torch.from_numpy(f1).bfloat16().T).double().numpy()
    err = np.abs(screen - f0.astype(np.float64) @ f1.astype(np.float64).T).max()
    e = error_bound(f0, f1, "bf16")
    assert err <= e - 2 * error_bound(f0, f1, "fp32") / 2
    assert e < 0.012  # 3 u_b + 2 g_c for unit vectors, as the module docstring derives


def test_inputs_checked():
    rng = np.random.default_rng(6)
    q = _unit(rng.standard_normal((4, 4, 8)).astype(np.float32))
    with pytest.raises(InputError, match="channels"):
        mnn_pairs_many(q, [q[..., :4]])
    bad = q.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        mnn_pairs_many(q, [bad])
    with pytest.raises(InputError, match="screen"):
        mnn_screen.screen("fp8")
    assert mnn_pairs_many(q, []) == []
    mixed = [q[:2], q, q[:3, :1]]  # candidates of different sizes in one call
    _assert_same(q, mixed, "fp32")
    got = mnn_pairs_many(q, mixed)  # default: small maps take the plain full product
    assert all(np.array_equal(g[1], mnn_pairs(q, x)[1]) for g, x in zip(got, mixed))


def test_verify_many_equals_verify_one_by_one():
    rng = np.random.default_rng(7)
    q = _smooth(rng, 10, 16, 3)
    locs = [_unit(q + 0.2 * rng.standard_normal(q.shape).astype(np.float32)), None, _smooth(rng, 10, 16, 3)]
    cands = [Candidate(i, 0.5, i) for i in range(3)]
    verifier = Verifier(VerifyConfig(method="global"))
    assert [v.score for v in verifier.verify_many(q, cands, locs)] == [0.5, 0.5, 0.5]
    verifier = Verifier(VerifyConfig(min_matches=5), mnn_gemm=screen("bf16"))
    dense = [0, 2]
    many = verifier.verify_many(q, [cands[i] for i in dense], [locs[i] for i in dense], keep_matches=True)
    for i, v in zip(dense, many):
        one = Verifier(VerifyConfig(min_matches=5)).verify(q, cands[i], locs[i], keep_matches=True)
        assert v.local_matches == one.local_matches == mnn_count(q, locs[i])
        assert np.array_equal(v.matches0, one.matches0) and v.accepted == one.accepted
    with pytest.raises(InputError, match="dense local features"):
        verifier.verify_many(q, cands, locs)


def test_numpy_bf16_rounding_is_torchs():
    """The bound is computed with numpy's round-to-nearest-even; torch's GEMM rounds the same way."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal(100_000).astype(np.float32)
    ties = (np.arange(1, 2001, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # exact halfway cases
    x = np.concatenate([x, ties, -ties, np.float32([0.0, -0.0, 1e-40, 3.0e38])])
    torch_rounded = torch.from_numpy(x).bfloat16().float().numpy()
    assert np.array_equal(_bf16(x), torch_rounded)
    # The compiled norms (the bound with numba) round the same way: per row, |bf16(x) - x|^2.
    rows = np.concatenate([x, np.zeros(-len(x) % 16, np.float32)]).reshape(-1, 16)
    err = (np.concatenate([torch_rounded, np.zeros(-len(x) % 16, np.float32)]).reshape(-1, 16)
           .astype(np.float64) - rows)
    for cut in (slice(0, 6250), slice(6250, None)):  # the random values, then the halfway cases
        part, d = rows[cut], err[cut]
        sq, sq_d = mnn_kernels.max_norms(np.ascontiguousarray(part))
        assert sq_d == pytest.approx(float(np.max(np.sum(d * d, axis=1))), rel=1e-12)
        assert sq == pytest.approx(float(np.max(np.sum(part.astype(np.float64) ** 2, axis=1))), rel=1e-12)


def test_configured_screen_choices_and_small_maps_plain():
    """verify.mnn_screen: fp32 is the core default; bf16 (and auto on a CPU with native bf16) give a
    screen that leaves maps fitting one block to the plain product and screens the large ones."""
    assert mnn_screen.configured_screen("fp32") is None
    bf16 = mnn_screen.configured_screen("bf16")
    assert isinstance(bf16, mnn_screen.LargeMapsScreen)
    auto = mnn_screen.configured_screen("auto")
    assert (auto is not None) == mnn_screen.native_bf16()
    with pytest.raises(InputError, match="mnn_screen"):
        mnn_screen.configured_screen("fp8")
    built = []

    def factory(f0, f):
        built.append(f.shape)
        return mnn_screen.TorchGemm(f0, f, "bf16")

    rng = np.random.default_rng(11)
    small = _smooth(rng, 20, 32, 5)
    _assert_same(small, [small[::-1].copy()], mnn_screen.LargeMapsScreen(factory))
    assert built == []  # 400 x 400 fits one block: the plain product
    large = _smooth(rng, 40, 32, 8)
    _assert_same(large, [large[::-1].copy()], mnn_screen.LargeMapsScreen(factory))
    assert built == [(1600, 32)]
