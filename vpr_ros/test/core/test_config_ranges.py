"""Every value a parameter's documented range allows must run: each numeric field at its minimum
and its maximum drives a few frames (a revisit, with poses) through the detector without error.

Regression: ``detector.min_loop_gap_sec:=.inf`` was allowed and raised OverflowError on every frame.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from vpr_ros.core.config import config_from_flat, flat_field_specs
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.types import Frame
from vpr_ros.io.poses import pose_matrix
from vpr_ros.nodes.settings import NODE_PARAMETERS

NS = 1_000_000_000
CORRIDOR = Path(__file__).resolve().parents[2] / "vpr_ros" / "data" / "corridor"


def corridor_image(split: str, index: int) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(CORRIDOR / split / f"{index:07d}.jpg")), cv2.COLOR_BGR2RGB)
NUMERIC = [s for s in flat_field_specs() if s.type in (int, float)]
EXTREMES = [pytest.param(s.name, bound, id=f"{s.name}={which}")
            for s in NUMERIC for which, bound in (("min", s.min), ("max", s.max))]


def _frames() -> list[Frame]:
    frames = [Frame(i * NS, corridor_image("ref", i), pose_matrix((float(i), 0.0, 0.0), (0, 0, 0, 1)))
              for i in range(3)]
    frames += [Frame((100 + i) * NS, corridor_image("query", i),
                     pose_matrix((float(i), 0.0, 0.0), (0, 0, 0, 1))) for i in range(3)]
    return frames


FRAMES = _frames()


def test_every_numeric_field_has_finite_bounds():
    for spec in [*NUMERIC, *(s for s in NODE_PARAMETERS if s.type in (int, float))]:
        assert spec.min is not None and spec.max is not None, spec.name
        assert math.isfinite(spec.min) and math.isfinite(spec.max), spec.name


@pytest.mark.parametrize("name,value", EXTREMES)
def test_each_extreme_allowed_value_runs_through_the_detector(name, value, tiny_extractor):
    spec = next(s for s in NUMERIC if s.name == name)
    value = spec.type(value)
    base = {"verify.temporal_consistency": 1, "verify.min_matches": 0}
    if name.startswith("verify."):
        base["verify.method"] = "mnn+fundamental"  # so the RANSAC fields take part too
    config = config_from_flat({**base, name: value})
    detector = LoopClosureDetector(config, tiny_extractor)
    results = [detector.process(f) for f in FRAMES]
    assert results[0].keyframe is not None  # the first frame is always a keyframe
    for r in results:
        assert all(math.isfinite(v) for v in r.timings_ms.values())


@pytest.mark.parametrize("name", ["detector.min_loop_gap_sec", "keyframes.min_gap_sec", "map.autosave_sec"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_infinite_time_values_are_refused_with_the_range(name, value):
    with pytest.raises(ConfigError, match=name):
        config_from_flat({name: value})


def test_largest_loop_gap_means_never_within_the_session(tiny_extractor):
    config = config_from_flat({"detector.min_loop_gap_sec": 1e9, "verify.temporal_consistency": 1,
                               "verify.min_matches": 0, "keyframes.min_translation_m": 0.0,
                               "keyframes.min_rotation_deg": 0.0})
    detector = LoopClosureDetector(config, tiny_extractor)
    results = [detector.process(f) for f in FRAMES]
    assert all(r.keyframe is not None for r in results)
    assert not any(r.verifications for r in results)  # every own keyframe stays excluded
    assert np.isfinite(results[-1].keyframe.global_).all()
