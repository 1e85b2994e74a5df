"""A small random-init SelaVPR++ ``-rerank`` model for the node test (``extractor_factory`` entry point).

The same tiny ViT-B-structured config as the model tests; the backend comes from the node's ``model.backend``.
"""

from __future__ import annotations

import torch

from vpr_ros.core.config import Config
from vpr_ros.models import VprModel, load_model

SMALL = dict(depth=2, embed_dim=32, num_heads=2, num_adapters=2, adapter_hidden=32, output_dim=40)


def selavprpp_base_rerank(config: Config) -> VprModel:
    torch.manual_seed(0)
    return load_model("selavprpp-base-rerank", pretrained=False, backend=config.model.backend,
                      threads=config.model.threads, **SMALL)
