"""Poseidon checkpoints: every parameter set from the right tensor of a synthetic state dict in their layout."""

from __future__ import annotations

import json

import pytest
import torch

from sciml.solvers.scot import PRESETS, ScOT, config_from_poseidon, load_poseidon, load_poseidon_state_dict

# A small Poseidon config.json (the released ones: 128, 4, 4, 4, 48/96/192, [4|8]*4, ..., 16).
POSEIDON_TINY = {
    "model_type": "swinv2", "image_size": 32, "patch_size": 2, "num_channels": 3, "num_out_channels": 2,
    "embed_dim": 8, "depths": [2, 1, 2], "num_heads": [2, 2, 4], "skip_connections": [2, 1, 0],
    "window_size": 4, "mlp_ratio": 4.0, "qkv_bias": True, "hidden_act": "gelu", "use_absolute_embeddings": False,
    "layer_norm_eps": 1e-5, "residual_model": "convnext", "use_conditioning": True, "learn_residual": False,
    "drop_path_rate": 0.0, "initializer_range": 0.02, "p": 1,
}


def poseidon_layout(cfg: dict, conditioned: bool = True) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the parameters Poseidon's ``ScOT`` registers (from camlab-ethz/poseidon scOT/model.py)."""
    out: dict[str, tuple[int, ...]] = {}
    e, p, levels = cfg["embed_dim"], cfg["patch_size"], len(cfg["depths"])
    hidden = int(cfg["mlp_ratio"] * e)

    def norm(prefix: str, c: int) -> None:
        if conditioned:  # ConditionalLayerNorm: weight = Linear(1, C), bias = Linear(1, C)
            out.update({f"{prefix}.weight.weight": (c, 1), f"{prefix}.weight.bias": (c,),
                        f"{prefix}.bias.weight": (c, 1), f"{prefix}.bias.bias": (c,)})
        else:
            out.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,)})

    def linear(prefix: str, c_in: int, c_out: int, bias: bool = True) -> None:
        out[f"{prefix}.weight"] = (c_out, c_in)
        if bias:
            out[f"{prefix}.bias"] = (c_out,)

    def layer(prefix: str, c: int, heads: int) -> None:  # ScOTLayer with HF's Swinv2Attention
        h = int(hidden / e * c)
        out[f"{prefix}.attention.self.logit_scale"] = (heads, 1, 1)
        linear(f"{prefix}.attention.self.continuous_position_bias_mlp.0", 2, 512)
        linear(f"{prefix}.attention.self.continuous_position_bias_mlp.2", 512, heads, bias=False)
        linear(f"{prefix}.attention.self.query", c, c)
        linear(f"{prefix}.attention.self.key", c, c, bias=False)
        linear(f"{prefix}.attention.self.value", c, c)
        linear(f"{prefix}.attention.output.dense", c, c)
        norm(f"{prefix}.layernorm_before", c)
        linear(f"{prefix}.intermediate.dense", c, h)
        linear(f"{prefix}.output.dense", h, c)
        norm(f"{prefix}.layernorm_after", c)

    out["embeddings.patch_embeddings.projection.weight"] = (e, cfg["num_channels"], p, p)
    out["embeddings.patch_embeddings.projection.bias"] = (e,)
    norm("embeddings.norm", e)
    for level in range(levels):
        c = e * 2**level
        for i in range(cfg["depths"][level]):
            layer(f"encoder.layers.{level}.blocks.{i}", c, cfg["num_heads"][level])
        if level < levels - 1:
            linear(f"encoder.layers.{level}.downsample.reduction", 4 * c, 2 * c, bias=False)
            norm(f"encoder.layers.{level}.downsample.norm", 2 * c)
    for k, level in enumerate(reversed(range(levels))):
        c = e * 2**level
        for i in range(cfg["depths"][level]):
            layer(f"decoder.layers.{k}.blocks.{i}", c, cfg["num_heads"][level])
        if level > 0:
            linear(f"decoder.layers.{k}.upsample.upsample", c, 2 * c, bias=False)
            linear(f"decoder.layers.{k}.upsample.mixup", c // 2, c // 2, bias=False)
            norm(f"decoder.layers.{k}.upsample.norm", c // 2)
    for level, depth in enumerate(cfg["skip_connections"]):
        c = e * 2**level
        for j in range(depth):
            out[f"residual_blocks.{level}.{j}.dwconv.weight"] = (c, 1, 7, 7)
            out[f"residual_blocks.{level}.{j}.dwconv.bias"] = (c,)
            norm(f"residual_blocks.{level}.{j}.norm", c)
            linear(f"residual_blocks.{level}.{j}.pwconv1", c, 4 * c)
            linear(f"residual_blocks.{level}.{j}.pwconv2", 4 * c, c)
            out[f"residual_blocks.{level}.{j}.weight"] = (c,)
    out["patch_recovery.projection.weight"] = (e, cfg["num_out_channels"], p, p)
    out["patch_recovery.projection.bias"] = (cfg["num_out_channels"],)
    out["patch_recovery.mixup.weight"] = (cfg["num_out_channels"], cfg["num_out_channels"], 5, 5)
    return out


def synthetic_state_dict(cfg: dict, conditioned: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=gen) for name, shape in poseidon_layout(cfg, conditioned).items()}


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
    from safetensors.torch import save_file

    state = synthetic_state_dict(POSEIDON_TINY)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(POSEIDON_TINY))
    model = load_poseidon(tmp_path)
    assert torch.equal(model.encoder[0].blocks[0].attention.logit_scale.detach(),
                       state["encoder.layers.0.blocks.0.attention.self.logit_scale"])
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_poseidon(tmp_path / "missing")
