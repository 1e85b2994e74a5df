"""``vpr-ros map export --g2o-information``: the information matrices of ``loops.g2o`` for the reader that
will use them, checked against each reader's own error definition.

* ``gtsam`` (default): GTSAM ``readG2o`` gives back a factor whose error is exactly half the squared
  Mahalanobis distance of the rotation-vector error under the loop's covariance.
* ``g2o``: g2o's ``EdgeSE3`` error is the translation and the quaternion's vector part (w >= 0) of
  ``Z^-1 X_from^-1 X_to``; computed here by hand, its chi2 under the file's information equals that
  same Mahalanobis distance to first order, while the default file's information would make g2o
  weigh a rotation error 4x too little.
"""

from __future__ import annotations

import gtsam
import numpy as np
from scipy.spatial.transform import Rotation

from store_maps import DIM, MODEL, index_writer, synthetic_keyframes
from vpr_ros.cli.main import main
from vpr_ros.core.map.snapshot import save_keyframes
from vpr_ros.core.types import LoopClosure
from vpr_ros.io.trajectory_export import g2o_information


def _pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def _map(path):
    """Three keyframes (SIMULATED poses) and one measured loop 2 -> 0 with a full covariance."""
    poses = [_pose([0, 0, 0], [0, 0, 0]), _pose([0, 0, 0.4], [1.0, 0.2, 0]), _pose([0.1, -0.2, 0.9], [1.5, 1.1, 0.3])]
    kfs = synthetic_keyframes(3, seed=0, session="s1")
    for kf, T in zip(kfs, poses):
        kf.pose = T
    rng = np.random.default_rng(5)
    A = rng.normal(size=(6, 6)) * np.array([0.03] * 3 + [0.01] * 3)
    cov = A @ A.T + np.diag([1e-4] * 3 + [1e-5] * 3)
    rel = np.linalg.solve(poses[0], poses[2])  # the vertices agree with it: every error below is the one applied
    loop = LoopClosure(2, 2 * 10**9, "r1", "s1", 0, 0, "r1", "s1", 0.9, 0, "mnn", 50, 64, 40, 50.0, 3, MODEL, DIM,
                       relative_pose=rel, covariance=cov)
    save_keyframes(path, kfs, MODEL, DIM, index_writer(kfs), loops=[loop])
    return path, rel, cov


def _edge(path):
    """The loop edge of a loops.g2o (its last line): from, to, Z (4, 4), information (6, 6) as written."""
    f = path.read_text().split("\n")[-2].split()
    assert f[0] == "EDGE_SE3:QUAT"
    x, y, z, qx, qy, qz, qw = map(float, f[3:10])
    Z = np.eye(4)
    Z[:3, :3], Z[:3, 3] = Rotation.from_quat([qx, qy, qz, qw]).as_matrix(), [x, y, z]
    info, upper = np.zeros((6, 6)), iter(map(float, f[10:]))
    for r in range(6):
        for c in range(r, 6):
            info[r, c] = info[c, r] = next(upper)
    return int(f[1]), int(f[2]), Z, info


def _g2o_chi2(Z, X_from, X_to, info):
    """g2o EdgeSE3 by hand: delta = Z^-1 X_from^-1 X_to, error (t, q.vec) with q.w >= 0, chi2 = e' I e."""
    delta = np.linalg.solve(Z, np.linalg.solve(X_from, X_to))
    q = Rotation.from_matrix(delta[:3, :3]).as_quat()
    q = q if q[3] >= 0 else -q
    e = np.r_[delta[:3, 3], q[:3]]
    return float(e @ info @ e)


def _mahalanobis2(Z, X_from, X_to, cov):
    """The loop's own measure: the right error exp(xi) = Z^-1 X_from^-1 X_to (translation first) under cov."""
    delta = gtsam.Pose3(np.linalg.solve(Z, np.linalg.solve(X_from, X_to)))
    xi = gtsam.Pose3.Logmap(delta)[[3, 4, 5, 0, 1, 2]]
    return float(xi @ np.linalg.solve(cov, xi))


def test_export_information_follows_the_named_g2o_reader(tmp_path, capsys):
    m, rel, cov = _map(tmp_path / "m")
    for name in ("gtsam", "g2o"):
        extra = [] if name == "gtsam" else ["--g2o-information", "g2o"]
        assert main(["map", "export", str(m), "--out", str(tmp_path / name), *extra]) == 0, capsys.readouterr()
    i, j, Z, info_gtsam = _edge(tmp_path / "gtsam" / "loops.g2o")
    assert (i, j) == (0, 2) and np.allclose(Z, rel, atol=1e-8)
    _, _, _, info_g2o = _edge(tmp_path / "g2o" / "loops.g2o")
    D = np.diag([1, 1, 1, 2, 2, 2.0])  # hand: error (t, phi / 2) -> information D C^-1 D
    np.testing.assert_allclose(info_g2o, D @ np.linalg.inv(cov) @ D, rtol=1e-6)
    np.testing.assert_allclose(info_gtsam, np.linalg.inv(cov), rtol=1e-6)

    graph, values = gtsam.readG2o(str(tmp_path / "gtsam" / "loops.g2o"), True)
    factor = graph.at(graph.size() - 1)
    X_from, X_to = values.atPose3(0).matrix(), values.atPose3(2).matrix()
    for k, xi in enumerate((np.r_[0.004, -0.003, 0.002, 0, 0, 0], np.r_[0.006, -0.004, 0.005, 0.003, 0.002, -0.004])):
        moved = X_to @ gtsam.Pose3.Expmap(xi).matrix()  # xi in GTSAM order (rot, trans)
        want = _mahalanobis2(Z, X_from, moved, cov)
        vals = gtsam.Values()
        vals.insert(0, gtsam.Pose3(X_from))
        vals.insert(2, gtsam.Pose3(moved))
        assert abs(2 * factor.error(vals) - want) < 1e-6 * want  # GTSAM reads the default file as meant
        assert abs(_g2o_chi2(Z, X_from, moved, info_g2o) - want) < 0.02 * want  # g2o reads the g2o file as meant
        if k == 0:  # a rotation error alone: the default file would make g2o see a quarter of it
            assert abs(_g2o_chi2(Z, X_from, moved, info_gtsam) / want - 0.25) < 0.02


def test_g2o_information_refuses_an_unknown_reader():
    import pytest

    from vpr_ros.core.errors import InputError

    with pytest.raises(InputError, match="gtsam, g2o"):
        g2o_information(np.eye(6), "ceres")
