"""Entropic optimal transport in the log domain with a dust bin, as SALAD assigns patches to clusters.

Written from the description in ``MODELS_2.md`` §1.3 (the official code is GPL-3.0; nothing is copied).
Scores S (B, m, n) of n patches against m clusters get one extra row, the learned dust-bin scalar z,
so patches that fit no cluster can be dropped. Row (cluster) marginals are 1/(n+m) for each cluster
and (n-m)/(n+m) for the dust bin; every column (patch) has marginal 1/(n+m). Three Sinkhorn
iterations (u first, then v) run in log space, which stays finite where exp(S) would overflow.
"""

from __future__ import annotations

import math

import torch

from vpr_ros.core.errors import ConfigError, InputError

__all__ = ["log_optimal_transport", "SALAD_ITERATIONS"]

#: The official SALAD/MegaLoc solver runs exactly three iterations; the checkpoints were trained so.
SALAD_ITERATIONS = 3


def log_optimal_transport(scores: torch.Tensor, dust_bin: torch.Tensor, iterations: int = SALAD_ITERATIONS,
                          reg: float = 1.0) -> torch.Tensor:
    """Log transport plan of ``scores`` augmented with a dust-bin row.

    Args:
        scores: (B, m, n) cluster-by-patch scores.
        dust_bin: 0-d tensor, the score of every patch against the dust bin.
        iterations: Sinkhorn iterations.
        reg: entropic regularisation (scores are divided by it).
    Returns:
        (B, m + 1, n) log P; the last row is the dust bin. Columns sum to 1 in P (after the final
        v update) and rows approximately to the marginals times n + m.
    Raises:
        ConfigError: fewer than one iteration.
        InputError: n <= m, where the dust bin's marginal (n - m)/(n + m) is not positive (the official
            code fails here too, with a math domain error): use a larger input or fewer clusters.
    """
    _, m, n = scores.shape
    if iterations < 1:
        raise ConfigError(f"Sinkhorn needs at least one iteration, got {iterations}")
    if n <= m:
        raise InputError(f"optimal transport needs more patches than clusters, got {n} patches for {m} "
                         f"clusters; feed a larger image (at least {m + 1} patches)")
    # Python floats: the marginals are graph constants in an exported model (only B is dynamic).
    norm = -math.log(n + m)
    bin_row = dust_bin.to(scores.dtype).expand_as(scores[:, :1])
    couplings = torch.cat([scores, bin_row], dim=1) / reg
    log_a = scores.new_tensor([norm] * m + [math.log(n - m) + norm]).reshape(1, m + 1)
    log_b = norm
    # v starts at 0, so the first u update needs no v term (and no batch-sized zeros in the graph).
    u = log_a - torch.logsumexp(couplings, dim=2)
    v = log_b - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    for _ in range(iterations - 1):
        u = log_a - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_b - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1) - norm
