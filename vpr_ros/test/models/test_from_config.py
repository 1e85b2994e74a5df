"""model.* parameters reach load_model the same way for the node, replay and the demo."""

import numpy as np

from vpr_ros.core.config import ModelConfig
from vpr_ros.models import load_model_from_config


def test_keep_aspect_reaches_preprocessing(tmp_path, monkeypatch):
    monkeypatch.setenv("VPR_ROS_CACHE", str(tmp_path))
    frame = np.full((120, 160, 3), 100, np.uint8)  # a 4:3 camera
    square = load_model_from_config(ModelConfig(backend="torch"))
    wide = load_model_from_config(ModelConfig(backend="torch", keep_aspect=True))
    assert tuple(square.preprocess([frame]).shape[-2:]) == square.spec.input_size == (322, 322)
    h, w = wide.preprocess([frame]).shape[-2:]
    assert w > h and h % 32 == 0 and w % 32 == 0
    desc = wide.extract([frame])
    assert desc.local.shape[2] > desc.local.shape[1]  # the local map keeps the aspect too
    assert square.model_id == wide.model_id  # same weights: maps stay compatible
