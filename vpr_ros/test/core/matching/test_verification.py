import numpy as np
import pytest

from vpr_ros.core.config import VerifyConfig
from vpr_ros.core.errors import InputError
from vpr_ros.core.types import Candidate
from vpr_ros.core.matching.verification import Verifier, mnn_count, mnn_pairs


def _unit_map(rng, h, w, c):
    x = rng.standard_normal((h, w, c)).astype(np.float32)
    return x / np.linalg.norm(x, axis=2, keepdims=True)


def naive_mnn(a, b):
    """Reference: loops over locations, first index on ties, like torch.argmax."""
    fa, fb = a.reshape(-1, a.shape[2]), b.reshape(-1, b.shape[2])
    pairs = []
    for i in range(len(fa)):
        sims = [float(np.dot(fa[i], fb[j])) for j in range(len(fb))]
        j = int(np.argmax(sims))
        back = [float(np.dot(fa[k], fb[j])) for k in range(len(fa))]
        if int(np.argmax(back)) == i:
            pairs.append((i, j))
    return pairs


@pytest.mark.parametrize("seed", range(5))
def test_mnn_equals_naive_reference(seed):
    rng = np.random.default_rng(seed)
    a, b = _unit_map(rng, 5, 6, 8), _unit_map(rng, 4, 7, 8)
    b[1, 2] = a[2, 3]  # a certain mutual pair
    i0, i1 = mnn_pairs(a, b)
    assert list(zip(i0.tolist(), i1.tolist())) == naive_mnn(a, b)


def test_identical_maps_match_everywhere(rng):
    a = _unit_map(rng, 10, 10, 16)
    assert mnn_count(a, a) == 100


def test_single_pair_scores_zero_like_selavpr():
    a = np.zeros((1, 2, 2), np.float32)
    a[0, 0] = [1, 0]
    a[0, 1] = [1, 0]  # tie: both locations have the same best, only the first is mutual
    b = np.array([[[1, 0]]], np.float32)
    assert len(mnn_pairs(a, b)[0]) == 1
    assert mnn_count(a, b) == 0


def test_warped_pair_beats_unrelated_pair(rng):
    a = _unit_map(rng, 12, 12, 32)
    shifted = np.roll(a, 2, axis=1) + 0.05 * rng.standard_normal(a.shape).astype(np.float32)
    shifted /= np.linalg.norm(shifted, axis=2, keepdims=True)
    unrelated = _unit_map(rng, 12, 12, 32)
    assert mnn_count(a, shifted) >= 100
    assert mnn_count(a, unrelated) <= 0.6 * mnn_count(a, shifted)


def test_verifier_accept_rule_and_geometry(rng):
    a = _unit_map(rng, 12, 12, 32)
    cand = Candidate(keyframe_id=7, similarity=0.9, rank=0)
    v = Verifier(VerifyConfig(min_matches=100)).verify(a, cand, a, keep_matches=True)
    assert v.accepted and v.local_matches == 144 and v.local_features == 144 and v.score == 144
    assert v.matches0.shape == (144, 2)
    strict = Verifier(VerifyConfig(min_matches=145)).verify(a, cand, a)
    assert not strict.accepted
    geo = Verifier(VerifyConfig(method="mnn+fundamental", min_matches=10, min_inliers=20)).verify(a, cand, a)
    assert geo.geometric_inliers >= 100 and geo.accepted and geo.score == geo.geometric_inliers
    low_sim = Verifier(VerifyConfig(min_matches=10, min_global_similarity=0.95)).verify(a, cand, a)
    assert not low_sim.accepted


def test_verifier_needs_local_features(rng):
    with pytest.raises(InputError, match="local features"):
        Verifier(VerifyConfig(method="mnn")).verify(None, Candidate(0, 0.5, 0), None)
    v = Verifier(VerifyConfig(method="global", min_global_similarity=0.4)).verify(None, Candidate(0, 0.5, 0), None)
    assert v.accepted and v.score == pytest.approx(0.5)
