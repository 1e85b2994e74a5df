"""Small random-init SALAD / MegaLoc / BoQ for node tests (``extractor_factory`` entry points).

The same tiny configs as the model tests; the backend comes from the node's ``model.backend``.
"""

from __future__ import annotations

import torch

from vpr_ros.core.config import Config
from vpr_ros.models import VprModel, load_model

_VIT = dict(depth=2, embed_dim=64, num_heads=2)
SMALL = {
    "salad": dict(_VIT, num_clusters=8, cluster_dim=16, token_dim=32, mlp_dim=32),
    "megaloc": dict(_VIT, num_clusters=8, cluster_dim=16, token_dim=32, mlp_dim=32, output_dim=48),
    "boq": dict(_VIT, proj_channels=32, num_queries=8, row_dim=4, boq_heads=2),
}


def _build(preset: str, config: Config) -> VprModel:
    torch.manual_seed(0)
    return load_model(preset, pretrained=False, backend=config.model.backend, threads=config.model.threads,
                      **SMALL[preset])


def salad(config: Config) -> VprModel:
    return _build("salad", config)


def megaloc(config: Config) -> VprModel:
    return _build("megaloc", config)


def boq(config: Config) -> VprModel:
    return _build("boq", config)
