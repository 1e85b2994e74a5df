import numpy as np
import pytest

from vpr_ros.core.config import IndexConfig
from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.core.index import KeyframeIndex, l2_normalise


def _unit(rng, n, d):
    return l2_normalise(rng.standard_normal((n, d)).astype(np.float32))


def test_flat_index_equals_bruteforce_cosine(rng):
    xb, xq = _unit(rng, 500, 64), _unit(rng, 20, 64)
    index = KeyframeIndex(64)
    keys = rng.permutation(10_000)[:500]
    index.add(keys, xb)
    for q in xq:
        got_keys, got_sims = index.search(q, 10)
        sims = xb @ q
        order = np.argsort(-sims)[:10]
        np.testing.assert_array_equal(got_keys, keys[order])
        np.testing.assert_allclose(got_sims, sims[order], rtol=1e-5, atol=1e-6)


def test_cosine_ranking_equals_l2_ranking(rng):
    xb, q = _unit(rng, 200, 32), _unit(rng, 1, 32)[0]
    index = KeyframeIndex(32)
    index.add(np.arange(200), xb)
    keys, _ = index.search(q, 15)
    l2 = np.linalg.norm(xb - q, axis=1)
    np.testing.assert_array_equal(keys, np.argsort(l2)[:15])


def test_incremental_add_and_exclusion(rng):
    xb = _unit(rng, 50, 16)
    index = KeyframeIndex(16)
    for i in range(50):
        index.add([i], xb[i])
    assert len(index) == 50
    exclude = set(range(0, 50, 2))
    keys, _ = index.search(xb[4], 5, exclude)
    assert len(keys) == 5 and not exclude & set(keys.tolist())
    ref = [k for k in np.argsort(-(xb @ xb[4])) if k not in exclude][:5]
    np.testing.assert_array_equal(keys, ref)


def test_hnsw_recall_is_high(rng):
    xb, xq = _unit(rng, 2000, 32), _unit(rng, 50, 32)
    exact, approx = KeyframeIndex(32), KeyframeIndex(32, IndexConfig(factory="HNSW32"))
    for idx in (exact, approx):
        idx.add(np.arange(2000), xb)
    hits = sum(len(set(exact.search(q, 10)[0]) & set(approx.search(q, 10)[0])) for q in xq)
    assert hits / (50 * 10) >= 0.9


def test_save_load_roundtrip(tmp_path, rng):
    xb = _unit(rng, 30, 8)
    index = KeyframeIndex(8)
    index.add(np.arange(100, 130), xb)
    index.save(tmp_path / "i.faiss")
    back = KeyframeIndex.load(tmp_path / "i.faiss")
    np.testing.assert_array_equal(back.search(xb[3], 4)[0], index.search(xb[3], 4)[0])
    np.testing.assert_allclose(back.reconstruct(103), xb[3], atol=1e-6)


def test_bad_factory_and_bad_vectors():
    with pytest.raises(ConfigError, match="index.factory"):
        KeyframeIndex(16, IndexConfig(factory="NotAnIndex"))
    with pytest.raises(ConfigError, match="training"):
        KeyframeIndex(16, IndexConfig(factory="IVF4,Flat"))
    index = KeyframeIndex(4)
    with pytest.raises(InputError, match="NaN"):
        index.add([0], np.array([np.nan, 1, 0, 0], np.float32))
    with pytest.raises(InputError, match="dimension"):
        index.add([0], np.ones(5, np.float32))
    assert index.search(np.ones(4, np.float32), 3)[0].size == 0
