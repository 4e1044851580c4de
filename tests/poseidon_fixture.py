"""A synthetic Poseidon checkpoint (names and shapes of their layout, random values) for the tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

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


def write_poseidon_folder(folder: Path, cfg: dict = POSEIDON_TINY) -> dict[str, torch.Tensor]:
    """``config.json`` + ``model.safetensors`` of a synthetic checkpoint in ``folder``; returns the state dict."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = synthetic_state_dict(cfg)
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(cfg))
    return state
