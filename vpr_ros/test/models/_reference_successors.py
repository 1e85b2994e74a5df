"""SelaVPR++ and ImAge written a second time, independently of ``vpr_ros.models``, from MODELS_3.md.

Plain functions over a state dict (keys as in the released files without ``module.``), computed in
float64 with explicit formulas: LayerNorm, softmax attention with [q|k|v] packing, exact GELU, LayerScale,
BatchNorm in eval (running statistics, eps 1e-3), GeM (clamp 1e-6, learned p), the side-stream recurrence
and ImAge's token insertion. Only conv2d, bicubic resize and erf come from torch. The tests compare our
models with these functions (tolerance 1e-4; the two usually agree to ~1e-6).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
State = dict[str, Tensor]


def _p(sd: State, key: str) -> Tensor:
    return sd[key].double()


def _layer_norm(x: Tensor, w: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _linear(x: Tensor, sd: State, prefix: str) -> Tensor:
    return x @ _p(sd, prefix + ".weight").T + _p(sd, prefix + ".bias")


def _l2(x: Tensor, dim: int) -> Tensor:
    return x / torch.clamp(torch.sqrt((x * x).sum(dim, keepdim=True)), min=1e-12)


def _gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _block(x: Tensor, sd: State, pre: str, heads: int) -> Tensor:
    """DINOv2 pre-norm block with LayerScale (MODELS_3.md §1.2)."""
    b, n, d = x.shape
    hd = d // heads
    h = _layer_norm(x, _p(sd, pre + "norm1.weight"), _p(sd, pre + "norm1.bias"))
    qkv = _linear(h, sd, pre + "attn.qkv").reshape(b, n, 3, heads, hd)
    q, k, v = (qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores - scores.max(-1, keepdim=True).values
    attn = torch.exp(scores)
    attn = attn / attn.sum(-1, keepdim=True)
    out = (attn @ v).permute(0, 2, 1, 3).reshape(b, n, d)
    x = x + _p(sd, pre + "ls1.gamma") * _linear(out, sd, pre + "attn.proj")
    h = _layer_norm(x, _p(sd, pre + "norm2.weight"), _p(sd, pre + "norm2.bias"))
    mlp = _linear(_gelu(_linear(h, sd, pre + "mlp.fc1")), sd, pre + "mlp.fc2")
    return x + _p(sd, pre + "ls2.gamma") * mlp


def _tokens(img: Tensor, sd: State, registers: bool) -> tuple[Tensor, int, int]:
    """[CLS, (registers), patches] with the bicubic pos-embed at scale ((h + 0.1)/G, (w + 0.1)/G)."""
    x = img.double()
    w = _p(sd, "backbone.patch_embed.proj.weight")
    patches = F.conv2d(x, w, _p(sd, "backbone.patch_embed.proj.bias"), stride=w.shape[-1])
    bsz, d, h, wd = patches.shape
    patches = patches.flatten(2).transpose(1, 2)
    pos = _p(sd, "backbone.pos_embed")
    g = int(round(math.sqrt(pos.shape[1] - 1)))
    if (h, wd) == (g, g):
        grid_pos = pos[:, 1:]
    else:
        grid = pos[:, 1:].reshape(1, g, g, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / g, (wd + 0.1) / g), mode="bicubic", antialias=False)
        assert grid.shape[-2:] == (h, wd)
        grid_pos = grid.permute(0, 2, 3, 1).reshape(1, h * wd, d)
    cls = _p(sd, "backbone.cls_token").expand(bsz, 1, d) + pos[:, :1]
    seq = [cls]
    if registers:
        seq.append(_p(sd, "backbone.register_tokens").expand(bsz, -1, d))
    seq.append(patches + grid_pos)
    return torch.cat(seq, dim=1), h, wd


def _conv_bn_relu(x: Tensor, sd: State, pre: str) -> Tensor:
    w = _p(sd, pre + "conv.weight")
    x = F.conv2d(x, w, _p(sd, pre + "conv.bias"), padding=w.shape[-1] // 2)
    shape = (1, -1, 1, 1)
    mean, var = _p(sd, pre + "bn.running_mean").view(shape), _p(sd, pre + "bn.running_var").view(shape)
    scale, shift = _p(sd, pre + "bn.weight").view(shape), _p(sd, pre + "bn.bias").view(shape)
    x = (x - mean) / torch.sqrt(var + 1e-3) * scale + shift
    return torch.clamp(x, min=0.0)


def _adapter(u: Tensor, sd: State, pre: str) -> Tensor:
    """MODELS_3.md §1.4: patch rows conv_out + h, CLS row 2 h, then D_fc2."""
    h = torch.clamp(_linear(u, sd, pre + "D_fc1"), min=0.0)
    b, n1, c = h.shape
    s = int(math.isqrt(n1 - 1))
    grid = h[:, 1:].reshape(b, s, s, c).permute(0, 3, 1, 2)
    outs = [_conv_bn_relu(grid, sd, pre + "branch1."),
            _conv_bn_relu(_conv_bn_relu(grid, sd, pre + "branch2.0."), sd, pre + "branch2.1."),
            _conv_bn_relu(_conv_bn_relu(grid, sd, pre + "branch3.0."), sd, pre + "branch3.1.")]
    conv = torch.cat(outs, dim=1).flatten(2).transpose(1, 2)
    mixed = torch.cat([2.0 * h[:, :1], conv + h[:, 1:]], dim=1)
    return _linear(mixed, sd, pre + "D_fc2")


def _gem_head(tokens: Tensor, sd: State, proj: str, p_key: str, out: str) -> Tensor:
    """Per-token linear, L2 per location, GeM (clamp 1e-6, learned p), linear, L2 (§1.5)."""
    f = _l2(_linear(tokens[:, 1:], sd, proj), dim=-1)
    p = _p(sd, p_key)[0]
    pooled = (torch.clamp(f, min=1e-6) ** p).mean(dim=1) ** (1.0 / p)
    return _l2(_linear(pooled, sd, out), dim=-1)


def selavprpp_reference(sd: State, img: Tensor, heads: int) -> dict[str, np.ndarray]:
    """Official SelaVPR++ outputs: ``global`` (B, out) and, for two-branch state dicts, ``z`` (B, 512)
    and ``bits`` (B, 64) = np.packbits(z >= 0). Also our documented local features, L2 per location:
    ``local`` = the frozen ViT's patch tokens after block round(2 depth / 3) - 1, ``local_side`` = the
    float side stream's patch tokens after the final LayerNorm."""
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("backbone.blocks."))
    n_ad = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("backbone.adapters."))
    hashing = "linear4.weight" in sd
    x, h, w = _tokens(img, sd, registers=False)
    assert h == w, "the reference, like the official code, needs a square grid"
    first = depth - n_ad
    keep = max(0, round(2 * depth / 3) - 1)
    y = z = x if first == 0 else None
    for i in range(depth):
        x = _block(x, sd, f"backbone.blocks.{i}.", heads)
        if i == keep:
            frozen = x[:, 1:]
        if i == first - 1:
            y = z = x
        elif i >= first:
            k = i - first
            y = y + _adapter(y + x, sd, f"backbone.adapters.{k}.")
            if hashing:
                z = z + _adapter(z + x, sd, f"backbone.adapters_hashing.{k}.")
    nw, nb = _p(sd, "backbone.norm.weight"), _p(sd, "backbone.norm.bias")
    y = _layer_norm(y, nw, nb)
    out = {"global": _gem_head(y, sd, "linear1", "aggregation.1.p", "linear2").numpy(),
           "local": _l2(frozen, dim=-1).reshape(y.shape[0], h, w, -1).numpy(),
           "local_side": _l2(y[:, 1:], dim=-1).reshape(y.shape[0], h, w, -1).numpy()}
    if hashing:
        code = _gem_head(_layer_norm(z, nw, nb), sd, "linear3", "aggregation_hashing.1.p", "linear4").numpy()
        out["z"] = code
        out["bits"] = np.packbits(code >= 0, axis=1)
    return out


def image_reference(sd: State, img: Tensor, heads: int, insert_before: int = 8) -> dict[str, np.ndarray]:
    """Official ImAge output (§2.3): ``global`` (B, T*D) token-major; our local features, L2 per location:
    ``local`` = the patch tokens entering block ``insert_before``, ``local_final`` = after the final norm."""
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("backbone.blocks."))
    learned = _p(sd, "learnable_aggregation_tokens")
    n_reg = sd["backbone.register_tokens"].shape[1]
    x, h, w = _tokens(img, sd, registers=True)
    for i in range(depth):
        if i == insert_before:
            frozen = x[:, 1 + n_reg:]
            x = torch.cat([learned.expand(x.shape[0], -1, -1), x], dim=1)
        x = _block(x, sd, f"backbone.blocks.{i}.", heads)
    x = _layer_norm(x, _p(sd, "backbone.norm.weight"), _p(sd, "backbone.norm.bias"))
    t = learned.shape[1]
    desc = torch.cat([x[:, i] for i in range(t)], dim=-1)  # token 0's channels, then token 1's, ...
    patches = x[:, t + 1 + n_reg:]
    return {"global": _l2(desc, dim=-1).numpy(), "local": _l2(frozen, dim=-1).reshape(x.shape[0], h, w, -1).numpy(),
            "local_final": _l2(patches, dim=-1).reshape(x.shape[0], h, w, -1).numpy()}


def perturb_(module: torch.nn.Module, seed: int = 0) -> None:
    """Make a random-init module look trained: LayerScale and norms away from 1/0, BatchNorm running
    statistics off the identity (variances 0.5-1.5), GeM powers 3.3 and 2.7, D_fc2 non-zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            elif name.endswith(".gamma") or "norm" in name or ".bn." in name:
                t.add_(0.2 * torch.randn(t.shape, generator=gen))
            elif name.endswith("aggregation.1.p"):
                t.fill_(3.3)
            elif name.endswith("aggregation_hashing.1.p"):
                t.fill_(2.7)
            elif name.endswith("pos_embed") or name.endswith("cls_token") or "register_tokens" in name:
                t.copy_(0.5 * torch.randn(t.shape, generator=gen))
            elif "conv.bias" in name or "D_fc" in name:
                t.add_(0.05 * torch.randn(t.shape, generator=gen))
