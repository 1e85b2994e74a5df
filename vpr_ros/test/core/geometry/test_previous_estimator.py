"""``geometry.covariance_model`` iid and ``geometry.refine_essential`` false give back the issue 19
estimator (for ``vpr-ros bench geometry --rendered --compare``): the plain covariance, and the
essential-matrix pose of recoverPose without refinement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vpr_ros.core.config import GeometryConfig
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.geometry import pose_covariance, relative_pose as rp
from vpr_ros.core.geometry.essential_refine import unrefined_covariance
from vpr_ros.core.geometry.pose_covariance import IID_MODEL
from vpr_ros.core.types import KeyframeGeometry

K = np.array([[450.0, 0, 376], [0, 450.0, 240], [0, 0, 1]])
HW = (480, 752)


def _T(rotvec, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rotvec, float))[0]
    T[:3, 3] = t
    return T


def _geometry(n: int = 0) -> KeyframeGeometry:
    return KeyframeGeometry(np.zeros((n, 2), np.float32), np.zeros((n, 1), np.float32),
                            np.full((n, 3), np.nan, np.float32), HW, K, np.zeros(0))


def _scene(T_m_q: np.ndarray, n: int = 150, seed: int = 0, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    pq = np.column_stack([rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(3, 10, n)])
    pm = pq @ T_m_q[:3, :3].T + T_m_q[:3, 3]
    proj = lambda p: p[:, :2] / p[:, 2:] * 450 + [376, 240] + rng.normal(0, noise, (len(p), 2))  # noqa: E731
    return pm, proj(pm), proj(pq)


def test_the_defaults_are_todays_estimator_and_bad_values_name_the_key():
    assert GeometryConfig().covariance_model == "calibrated" and GeometryConfig().refine_essential is True
    with pytest.raises(ConfigError, match="geometry.covariance_model"):
        GeometryConfig(covariance_model="plain")


def test_iid_covariance_model_is_exactly_the_iid_model(monkeypatch):
    X, _, px = _scene(_T([0.05, -0.3, 0.02], [0.4, -0.05, 0.1]))
    now = rp.estimate_pnp(X, px, _geometry(), np.eye(4), GeometryConfig(), seed=3)
    iid = rp.estimate_pnp(X, px, _geometry(), np.eye(4), GeometryConfig(covariance_model="iid"), seed=3)
    monkeypatch.setattr(pose_covariance, "PNP_MODEL", IID_MODEL)  # what the calibrated path reads
    plain = rp.estimate_pnp(X, px, _geometry(), np.eye(4), GeometryConfig(), seed=3)
    assert now.valid and iid.valid and plain.valid
    np.testing.assert_array_equal(iid.T_match_query, now.T_match_query)  # the same pose
    np.testing.assert_array_equal(iid.covariance, plain.covariance)
    assert np.all(np.diag(now.covariance) > 2.0 * np.diag(iid.covariance))  # calibrated: inflated


def test_refine_essential_false_is_the_unrefined_recover_pose(monkeypatch):
    T = _T([0.02, 0.35, -0.05], [0.8, 0.1, 0.3])
    _, pm, pq = _scene(T)
    refined = rp.estimate_essential(pm, pq, _geometry(), _geometry(), GeometryConfig(), seed=4)
    monkeypatch.setattr(rp, "search_essential", lambda *a, **k: pytest.fail("refinement must be skipped"))
    est = rp.estimate_essential(pm, pq, _geometry(), _geometry(), GeometryConfig(refine_essential=False), seed=4)
    # The issue 19 estimator by hand: MAGSAC essential, recoverPose, covariance at that pose.
    x_m, x_q = (pm - K[:2, 2]) / 450.0, (pq - K[:2, 2]) / 450.0
    cv2.setRNGSeed(4)
    E, mask = cv2.findEssentialMat(x_m, x_q, np.eye(3), method=cv2.USAC_MAGSAC, prob=0.9999,
                                   threshold=2.0 / 450.0, maxIters=2000)
    inl = mask.reshape(-1).astype(bool)
    _, R, t, cheiral = cv2.recoverPose(E, x_m[inl], x_q[inl], np.eye(3))
    idx = np.flatnonzero(inl)[cheiral.reshape(-1) > 0]
    T_q_m = np.eye(4)
    T_q_m[:3, :3], T_q_m[:3, 3] = R, t.reshape(3) / np.linalg.norm(t)
    T_cam = np.linalg.inv(T_q_m)
    cov, rms = unrefined_covariance(T_cam, x_m[idx], x_q[idx], 450.0)
    assert est.valid and est.method == "essential" and est.inliers == len(idx)
    np.testing.assert_allclose(est.T_match_query, T_cam, atol=1e-12)
    np.testing.assert_allclose(est.covariance, cov, rtol=1e-6, atol=1e-15)  # finite differences
    assert est.rms_px == pytest.approx(rms)
    assert refined.valid and not np.allclose(refined.T_match_query, est.T_match_query, atol=1e-9)
