"""Poseidon checkpoints: every parameter set from the right tensor of a synthetic state dict in their layout."""

from __future__ import annotations

import pytest
import torch

from poseidon_fixture import POSEIDON_TINY, synthetic_state_dict, write_poseidon_folder
from sciml.solvers.scot import PRESETS, ScOT, config_from_poseidon, load_poseidon, load_poseidon_state_dict


def test_every_parameter_is_set_from_the_right_tensor():
    state = synthetic_state_dict(POSEIDON_TINY)
    model = ScOT(config_from_poseidon(POSEIDON_TINY))
    sources = load_poseidon_state_dict(model, state)
    params = dict(model.named_parameters())
    # a bijection: each of our parameters equals exactly the tensor named as its source, and
    # every entry of the state dict is used once
    assert sorted(sources.values()) == sorted(state)
    for name, param in params.items():
        matches = [k for k, v in state.items() if v.shape == param.shape and torch.equal(v, param.detach())]
        assert matches == [sources[name]], name
    # the correspondences that carry structure, written out by hand (3 levels)
    expected = {
        "embed.norm.gamma.weight": "embeddings.norm.weight.weight",
        "embed.norm.beta.bias": "embeddings.norm.bias.bias",
        "encoder.1.blocks.0.attention.key.weight": "encoder.layers.1.blocks.0.attention.self.key.weight",
        "encoder.0.blocks.1.attention.proj.bias": "encoder.layers.0.blocks.1.attention.output.dense.bias",
        "encoder.2.blocks.1.fc1.weight": "encoder.layers.2.blocks.1.intermediate.dense.weight",
        "merges.1.reduction.weight": "encoder.layers.1.downsample.reduction.weight",
        "decoder.2.blocks.1.attention.cpb_mlp.2.weight":
            "decoder.layers.0.blocks.1.attention.self.continuous_position_bias_mlp.2.weight",
        "decoder.0.blocks.0.norm_mlp.beta.weight": "decoder.layers.2.blocks.0.layernorm_after.bias.weight",
        "expands.1.expand.weight": "decoder.layers.0.upsample.upsample.weight",
        "expands.0.mix.weight": "decoder.layers.1.upsample.mixup.weight",
        "skips.0.1.layer_scale": "residual_blocks.0.1.weight",
        "skips.1.0.fc2.weight": "residual_blocks.1.0.pwconv2.weight",
        "recover.mix.weight": "patch_recovery.mixup.weight",
    }
    for ours, theirs in expected.items():
        assert torch.equal(params[ours].detach(), state[theirs]), ours


def test_decoder_mirrors_poseidon_shift_pattern():
    model = ScOT(config_from_poseidon({**POSEIDON_TINY, "depths": [3, 2, 1], "image_size": 64}))
    for stage in model.encoder:
        assert [b.shifted for b in stage.blocks] == [i % 2 == 1 for i in range(len(stage.blocks))]
    for stage in model.decoder:  # Poseidon builds decoder block j with i = depth - 1 - j
        n = len(stage.blocks)
        assert [b.shifted for b in stage.blocks] == [(n - 1 - j) % 2 == 1 for j in range(n)]


def test_plain_layer_norms_load_as_time_independent():
    state = synthetic_state_dict(POSEIDON_TINY, conditioned=False)
    model = ScOT(config_from_poseidon({**POSEIDON_TINY, "use_conditioning": False}))
    sources = load_poseidon_state_dict(model, state)
    norm = model.decoder[1].blocks[0].norm_attention
    assert torch.equal(norm.gamma.bias.detach(), state["decoder.layers.1.blocks.0.layernorm_before.weight"])
    assert torch.equal(norm.beta.bias.detach(), state["decoder.layers.1.blocks.0.layernorm_before.bias"])
    assert not norm.gamma.weight.any() and not norm.beta.weight.any()
    assert sources["embed.norm.gamma.weight"] == "<zero>"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([0.1])), model(x, torch.tensor([0.9])))


def test_mismatches_fail_loudly():
    model = ScOT(config_from_poseidon(POSEIDON_TINY))
    state = synthetic_state_dict(POSEIDON_TINY)
    with pytest.raises(KeyError, match="no counterpart"):
        load_poseidon_state_dict(model, {**state, "encoder.layers.0.blocks.9.output.dense.bias": torch.zeros(8)})
    missing = dict(state)
    del missing["residual_blocks.1.0.weight"]
    with pytest.raises(KeyError, match="skips.1.0.layer_scale"):
        load_poseidon_state_dict(model, missing)
    with pytest.raises(ValueError, match="expected"):
        load_poseidon_state_dict(model, {**state, "patch_recovery.mixup.weight": torch.zeros(3, 3, 5, 5)})
    # a refused state dict leaves the model as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for bad in ({**state, "patch_recovery.mixup.weight": torch.zeros(3, 3, 5, 5)},
                {**state, "extra.bias": torch.zeros(2)}):
        with pytest.raises((KeyError, ValueError)):
            load_poseidon_state_dict(model, bad)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # buffers saved by older transformers are recomputed, not an error
    load_poseidon_state_dict(model, {**state, "encoder.layers.0.blocks.0.attention.self.relative_position_index":
                                     torch.zeros(16, 16, dtype=torch.long)})


@pytest.mark.parametrize("name, embed, depth", [("T", 48, 4), ("B", 96, 8), ("L", 192, 8)])
def test_released_configs_are_the_presets(name, embed, depth):
    released = {**POSEIDON_TINY, "image_size": 128, "patch_size": 4, "num_channels": 4, "num_out_channels": 4,
                "embed_dim": embed, "depths": [depth] * 4, "num_heads": [3, 6, 12, 24],
                "skip_connections": [2, 2, 2, 0], "window_size": 16}
    assert config_from_poseidon(released) == PRESETS[name]


@pytest.mark.parametrize("key, value", [("use_absolute_embeddings", True), ("residual_model", "resnet"),
                                        ("qkv_bias", False), ("learn_residual", True), ("image_size", [32, 64])])
def test_unsupported_poseidon_settings_raise(key, value):
    with pytest.raises(ValueError, match=key):
        config_from_poseidon({**POSEIDON_TINY, key: value})


def test_load_poseidon_folder(tmp_path):
    state = write_poseidon_folder(tmp_path)
    model = load_poseidon(tmp_path)
    assert torch.equal(model.encoder[0].blocks[0].attention.logit_scale.detach(),
                       state["encoder.layers.0.blocks.0.attention.self.logit_scale"])
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_poseidon(tmp_path / "missing")
