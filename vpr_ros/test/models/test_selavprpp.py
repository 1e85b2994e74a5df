"""SelaVPR++: manifests of the four released files, strict load of the released layout, parity with an
independent reference (MODELS_3.md), batch independence, the hash rule, and the square-input rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference import assert_batch_equals_each_alone, manifest, state_manifest
from _reference_successors import perturb_, selavprpp_reference

from vpr_ros.core.errors import ConfigError, InputError, ModelLoadError
from vpr_ros.models import load_model
from vpr_ros.models.hash_code import pack_bits, pack_bits_numpy
from vpr_ros.models.registry import get_preset
from vpr_ros.models.selavprpp import (build_selavprpp, build_selavprpp_base, build_selavprpp_base_rerank,
                                      build_selavprpp_rerank)

# ViT-L structure (side stream starts after block 0 of 3) and ViT-B structure (from the embedded tokens).
SMALL_L = dict(depth=3, embed_dim=32, num_heads=2, num_adapters=2, adapter_hidden=32, output_dim=48)
SMALL_B = dict(depth=2, embed_dim=32, num_heads=2, num_adapters=2, adapter_hidden=32, output_dim=40)
BUILDERS = {"selavprpp": build_selavprpp, "selavprpp-rerank": build_selavprpp_rerank,
            "selavprpp-base": build_selavprpp_base, "selavprpp-base-rerank": build_selavprpp_base_rerank}


def small(preset: str) -> dict:
    return dict(SMALL_B if "base" in preset else SMALL_L)


def trained_like(preset: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = BUILDERS[preset](**small(preset))
    perturb_(model, seed)
    return model.eval()


@pytest.mark.parametrize("preset,tsv,elements", [
    ("selavprpp", "selavprpp_large", 331_314_257), ("selavprpp-rerank", "selavprpp_large_rerank", 354_586_274),
    ("selavprpp-base", "selavprpp_base", 97_909_629), ("selavprpp-base-rerank", "selavprpp_base_rerank", 108_057_594)])
def test_full_size_state_dict_equals_released_manifest(preset, tsv, elements) -> None:
    spec = get_preset(preset)
    with torch.device("meta"):
        m = BUILDERS[preset]()
        if "base" in preset:  # shapes at the released input, on the meta device (no compute)
            g, loc = m(torch.empty(1, 3, *spec.input_size))
            assert g.shape == (1, spec.global_dim) and loc.shape == (1, *spec.local_shape)
    assert state_manifest(m) == manifest(tsv)  # names, shapes, dtypes and order, module. stripped
    assert sum(v.numel() for v in m.state_dict().values()) == elements  # MODELS_3.md §1.10
    assert (m.global_dim, m.hash_dim) == (spec.global_dim, spec.hash_bits)


@pytest.mark.parametrize("preset", sorted(BUILDERS))
def test_outputs_equal_the_independent_reference(preset) -> None:
    model = trained_like(preset)
    sd = model.state_dict()
    for side in (70, 84):
        x = torch.randn(2, 3, side, side)
        ref = selavprpp_reference(sd, x, heads=2)
        with torch.no_grad():
            g, loc = model(x)
        np.testing.assert_allclose(g.numpy(), ref["global"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(loc.numpy(), ref["local"], atol=1e-4, rtol=0)
        assert np.abs(g.numpy() - ref["global"]).max() < 1e-5  # in practice far inside the tolerance
        if model.hash_dim:
            with torch.no_grad():
                z, packed = model.hash(x)
                g2, loc2, z2 = model.forward_with_hash(x)
            np.testing.assert_allclose(z.numpy(), ref["z"], atol=1e-4, rtol=0)
            torch.testing.assert_close(z2, z, atol=0, rtol=0)
            torch.testing.assert_close(g2, g, atol=0, rtol=0)
            near_zero = np.abs(ref["z"]) < 1e-5
            got_bits = np.unpackbits(packed.numpy(), axis=1).astype(bool)
            ref_bits = np.unpackbits(ref["bits"], axis=1).astype(bool)
            assert z.shape == (2, 512) and packed.shape == (2, 64) and packed.dtype == torch.uint8
            assert not ((got_bits != ref_bits) & ~near_zero).any()


def test_side_stream_local_features_option() -> None:
    torch.manual_seed(0)
    model = build_selavprpp_rerank(**SMALL_L, local_tokens="side")
    perturb_(model)
    x = torch.randn(1, 3, 56, 56)
    ref = selavprpp_reference(model.eval().state_dict(), x, heads=2)
    with torch.no_grad():
        loc = model(x)[1]
    np.testing.assert_allclose(loc.numpy(), ref["local_side"], atol=1e-4, rtol=0)
    assert np.abs(ref["local_side"] - ref["local"]).max() > 1e-2  # the two choices differ
    with pytest.raises(ConfigError, match="local_tokens='final'; choose one of frozen, side"):
        build_selavprpp(**SMALL_L, local_tokens="final")


def test_adapters_use_running_batchnorm_statistics() -> None:
    """MODELS_3.md §0.10: BatchNorm on its running statistics (train mode would move the output)."""
    model = trained_like("selavprpp-base")
    x = torch.randn(1, 3, 70, 70)
    ref = selavprpp_reference(model.state_dict(), x, heads=2)["global"]
    with torch.no_grad():
        g = model(x)[0]
        model.train()  # batch statistics instead of the running ones (and it updates them)
        g_train = model(x)[0]
        model.eval()
    np.testing.assert_allclose(g.numpy(), ref, atol=1e-5)
    assert np.abs(g_train.numpy() - ref).max() > 1e-3


@pytest.mark.parametrize("preset", ["selavprpp", "selavprpp-base-rerank"])
def test_batch_of_two_equals_each_alone(preset) -> None:
    model = trained_like(preset)
    assert_batch_equals_each_alone(model, hw=(70, 70))
    if model.hash_dim:
        x = torch.randn(2, 3, 70, 70)
        with torch.no_grad():
            both = model.hash(x)
            alone = [model.hash(x[i:i + 1]) for i in range(2)]
        torch.testing.assert_close(both[0], torch.cat([a[0] for a in alone]), atol=1e-6, rtol=1e-6)


def test_hash_rule_exact_zeros_and_msb_order() -> None:
    z = torch.zeros(3, 16)
    z[0, 0] = 1.0        # bit 0 -> MSB of byte 0
    z[0, 1:8] = -1.0
    z[0, 8:] = -1e-30    # tiny negatives are 0 bits
    z[1] = -0.0          # negative zero is >= 0: all ones
    z[2, 7] = -2.0       # every bit 1 except the LSB of byte 0
    packed = pack_bits(z)
    assert packed.tolist() == [[0b10000000, 0], [255, 255], [0b11111110, 255]]
    assert np.array_equal(packed.numpy(), pack_bits_numpy(z.numpy()))
    assert np.array_equal(packed.numpy(), np.packbits(z.numpy() >= 0, axis=1))  # the official path
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_bits(torch.zeros(1, 12))


def test_model_hash_gives_one_for_exact_zero_outputs() -> None:
    """Rows of linear4 with zero weights and bias give z == 0 exactly: those bits must be 1; rows with a
    negative bias and zero weights give 0 bits (the sign of linear4's output decides, MSB first)."""
    model = trained_like("selavprpp-base-rerank")
    with torch.no_grad():
        model.linear4.weight[:16] = 0.0
        model.linear4.bias[:8] = 0.0
        model.linear4.bias[8:16] = -1.0
        z, packed = model.hash(torch.randn(2, 3, 56, 56))
    assert (z[:, :8] == 0).all() and (z[:, 8:16] < 0).all()
    assert packed[:, 0].tolist() == [255, 255] and packed[:, 1].tolist() == [0, 0]


def test_non_square_inputs_are_refused_with_the_shape_and_the_fix() -> None:
    model = trained_like("selavprpp-base-rerank")
    for hw in ((56, 70), (42, 84)):  # 42x84 = 3x6 patches: a square count would not help (18 patches)
        with pytest.raises(InputError, match=rf"square inputs only, got {hw[0]}x{hw[1]} px.*322x322"):
            model(torch.randn(1, 3, *hw))
        with pytest.raises(InputError, match="square inputs only"):
            model.hash(torch.randn(1, 3, *hw))
    with pytest.raises(InputError, match="multiples of 14"):
        model(torch.randn(1, 3, 60, 60))
    with pytest.raises(ConfigError, match="square inputs only.*56x70"):
        load_model("selavprpp-base-rerank", pretrained=False, input_size=(56, 70), **SMALL_B)
    with pytest.raises(ConfigError, match="keep_aspect True"):
        load_model("selavprpp", pretrained=False, keep_aspect=True, **SMALL_L)
    with pytest.raises(AttributeError, match="no hash branch"):
        trained_like("selavprpp").hash(torch.randn(1, 3, 56, 56))


def _released_layout(model: torch.nn.Module, path) -> None:
    """What the training script saves (MODELS_3.md §1.10): DataParallel keys, Adam state of the trained
    parameters (adapters and heads), NumPy recalls and a NumPy best score."""
    trained = [p for n, p in model.named_parameters() if "adapters" in n or not n.startswith("backbone.")]
    opt = torch.optim.Adam(trained, lr=1e-5)
    loss = sum(p.sum() for p in trained)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.save({"epoch_num": 4, "model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "optimizer_state_dict": opt.state_dict(), "recalls": np.array([91.2, 96.0, 97.1, 98.4]),
                "best_r5": np.float64(187.25), "not_improved_num": 1}, path)


def test_released_training_checkpoint_loads_strictly_and_wrong_presets_are_named(tmp_path) -> None:
    model = trained_like("selavprpp-base-rerank")
    path = tmp_path / "SelaVPRplusplus_base_rerank.pth"
    _released_layout(model, path)
    loaded = load_model("selavprpp-base-rerank", str(path), **SMALL_B, input_size=(56, 56))
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x)[0], model.eval()(x)[0], atol=0, rtol=0)
        torch.testing.assert_close(loaded.module.hash(x)[1], model.hash(x)[1], atol=0, rtol=0)
    assert loaded.model_id.startswith("selavprpp-base-rerank@") and loaded.hash_bits == 512
    # The standard preset has no hash branch: the file's extra keys are refused, and the message names
    # the preset the file fits.
    with pytest.raises(ModelLoadError, match=r"unexpected.*looks like preset: selavprpp-base-rerank"):
        load_model("selavprpp-base", str(path), **SMALL_B, input_size=(56, 56))
    with pytest.raises(ModelLoadError, match=r"looks like preset: selavprpp-base-rerank"):
        load_model("cricavpr", str(path), pretrained=True, embed_dim=32, depth=2, num_heads=2, adapter_hidden=32)
