"""scOT: time-conditioned norm, window attention against dense references, shifted-window masking, model contracts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sciml.solvers.scot import (
    PRESETS,
    ScOT,
    ScOTConfig,
    SwinV2Block,
    TimeLayerNorm,
    cyclic_shift,
    parameter_count,
    window_partition,
    window_reverse,
)

F64 = torch.float64


def tiny_config(**overrides) -> ScOTConfig:
    base = dict(image_size=32, patch_size=2, in_channels=2, out_channels=3, embed_dim=8, depths=(2, 1),
                num_heads=(2, 4), window_size=4, skip_connections=(1, 0))
    return ScOTConfig(**{**base, **overrides})


def randomise_time_norms(model: nn.Module, std: float = 0.3) -> None:
    """Give every TimeLayerNorm a non-trivial dependence on t."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, TimeLayerNorm):
                for p in m.parameters():
                    p.add_(std * torch.randn_like(p))


# --------------------------------------------------------------------------- time layer norm


@pytest.mark.parametrize("t", [0.0, 0.37, -2.5, 11.0])
def test_time_layer_norm_is_layer_norm_when_t_coefficients_vanish(t):
    torch.manual_seed(0)
    dim = 6
    norm = TimeLayerNorm(dim, eps=1e-5).double()
    ref = nn.LayerNorm(dim, eps=1e-5).double()
    with torch.no_grad():
        norm.gamma.weight.zero_()
        norm.beta.weight.zero_()
        norm.gamma.bias.normal_()
        norm.beta.bias.normal_()
        ref.weight.copy_(norm.gamma.bias)
        ref.bias.copy_(norm.beta.bias)
    x = 3.0 * torch.randn(3, 4, 5, dim, dtype=F64) + 1.0
    out = norm(x, torch.full((3,), t, dtype=F64))
    torch.testing.assert_close(out, ref(x), rtol=1e-12, atol=1e-12)


def test_time_layer_norm_is_affine_in_t_per_sample():
    torch.manual_seed(1)
    norm = TimeLayerNorm(5).double()
    randomise_time_norms(norm)
    x = torch.randn(2, 7, 5, dtype=F64)
    t = torch.tensor([0.2, 1.3], dtype=F64)
    xhat = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + norm.eps)
    gamma = norm.gamma.weight[:, 0] * t[:, None] + norm.gamma.bias
    beta = norm.beta.weight[:, 0] * t[:, None] + norm.beta.bias
    torch.testing.assert_close(norm(x, t), gamma[:, None] * xhat + beta[:, None], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("start", ["identity", "poseidon"])
def test_time_norms_start_as_configured(start):
    """identity: every time norm a plain layer norm (gamma = 1, beta = 0 for all t); poseidon: their maps
    drawn like any linear layer (std init_std, zero biases), so every norm outputs exactly 0 at t = 0
    and little after, and the model's output at t = 0 does not depend on its input fields."""
    torch.manual_seed(0)
    model = ScOT(tiny_config(time_norm_init=start)).double()
    norms = [m for m in model.modules() if isinstance(m, TimeLayerNorm)]
    assert len(norms) > 4
    for norm in norms:
        weights = torch.cat([norm.gamma.weight.ravel(), norm.beta.weight.ravel()])
        if start == "identity":
            assert torch.equal(norm.gamma.bias, torch.ones_like(norm.gamma.bias)) and not weights.any()
        else:
            assert not norm.gamma.bias.any() and not norm.beta.bias.any()
            assert 0.5 * 0.02 < float(weights.std()) < 1.5 * 0.02 and float(weights.abs().max()) <= 2 * 0.02
            assert not norm(torch.randn(3, 7, norm.dim, dtype=F64), torch.zeros(3, dtype=F64)).any()
    fields = torch.randn(2, 2, 32, 32, dtype=F64)
    out = model(fields, torch.zeros(2, dtype=F64))
    assert torch.equal(out[0], out[1]) == (start == "poseidon")
    with pytest.raises(ValueError, match="time_norm_init identity or poseidon"):
        tiny_config(time_norm_init="zero")


# --------------------------------------------------------------------------- window bookkeeping


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_shift_partition_round_trip_is_identity(shift):
    x = torch.randn(2, 8, 12, 3)
    windows = window_partition(cyclic_shift(x, shift), 4)
    assert windows.shape == (2 * 2 * 3, 16, 3)
    back = cyclic_shift(window_reverse(windows, 4, 8, 12), -shift)
    assert torch.equal(back, x)


def test_cyclic_shift_moves_tokens_by_minus_shift():
    x = torch.randn(1, 6, 5, 2)
    y = cyclic_shift(x, 2)
    for i, j in [(0, 0), (4, 3), (5, 4)]:
        assert torch.equal(y[0, i, j], x[0, (i + 2) % 6, (j + 2) % 5])


def test_window_partition_groups_contiguous_blocks():
    x = torch.arange(8 * 8, dtype=torch.float32).view(1, 8, 8, 1)
    windows = window_partition(x, 4)[..., 0]
    torch.testing.assert_close(windows[1], x[0, 0:4, 4:8, 0].reshape(-1))  # second window: top right


# --------------------------------------------------------------------------- window attention


def log_spaced(d: torch.Tensor, window: int) -> torch.Tensor:
    d = 8.0 * d / max(window - 1, 1)
    return torch.sign(d) * torch.log2(1.0 + d.abs()) / math.log2(8.0)


def reference_global_attention(block: SwinV2Block, x: torch.Tensor) -> torch.Tensor:
    """Dense multi-head cosine attention over all tokens of an ``n × n`` grid, position bias per pair."""
    att = block.attention
    b, h, w, c = x.shape
    heads, hd = att.num_heads, c // att.num_heads
    tokens = x.reshape(b, h * w, c)
    q = att.query(tokens).view(b, -1, heads, hd)
    k = att.key(tokens).view(b, -1, heads, hd)
    v = att.value(tokens).view(b, -1, heads, hd)
    cos = torch.einsum("bihd,bjhd->bhij", q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True))
    scale = torch.exp(torch.clamp(att.logit_scale.view(heads), max=math.log(100.0)))
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    yy, xx = yy.reshape(-1).to(x.dtype), xx.reshape(-1).to(x.dtype)
    offsets = torch.stack([log_spaced(yy[:, None] - yy[None, :], h), log_spaced(xx[:, None] - xx[None, :], w)], -1)
    bias = 16.0 * torch.sigmoid(att.cpb_mlp(offsets)).permute(2, 0, 1)  # (heads, N, N)
    probs = torch.softmax(scale[None, :, None, None] * cos + bias[None], dim=-1)
    out = torch.einsum("bhij,bjhd->bihd", probs, v).reshape(b, h * w, c)
    return att.proj(out).view(b, h, w, c)


@pytest.mark.parametrize("window_size, shifted", [(4, False), (4, True), (8, True)])
def test_window_attention_on_one_window_is_global_attention(window_size, shifted):
    torch.manual_seed(2)
    block = SwinV2Block(6, 2, window_size=window_size, shifted=shifted).double()
    with torch.no_grad():
        block.attention.logit_scale.copy_(torch.tensor([0.5, 5.5], dtype=F64).view(2, 1, 1))  # one head clamped
    x = torch.randn(2, 4, 4, 6, dtype=F64)
    assert block.geometry(4, 4) == (4, 0)
    torch.testing.assert_close(block.attend(x), reference_global_attention(block, x), rtol=1e-10, atol=1e-10)


def shifted_region(i: int, window: int, shift: int) -> int:
    """Shifted-window index of original row/column i, counted without wrapping around."""
    return (i + shift) // window


@pytest.mark.parametrize("token", [(0, 0), (7, 7), (0, 6), (3, 5), (6, 1)])
def test_shifted_windows_do_not_attend_across_the_wrap_around(token):
    torch.manual_seed(3)
    block = SwinV2Block(6, 2, window_size=4, shifted=True).double()
    randomise_time_norms(block)
    window, shift = block.geometry(8, 8)
    assert (window, shift) == (4, 2)
    x = torch.randn(1, 8, 8, 6, dtype=F64)
    t = torch.tensor([0.4], dtype=F64)
    y = x.clone()
    y[0, token[0], token[1]] += torch.randn(6, dtype=F64)
    changed = (block(y, t) - block(x, t)).abs().amax(-1)[0] > 0
    rows = torch.tensor([shifted_region(i, window, shift) == shifted_region(token[0], window, shift) for i in range(8)])
    cols = torch.tensor([shifted_region(j, window, shift) == shifted_region(token[1], window, shift) for j in range(8)])
    assert torch.equal(changed, rows[:, None] & cols[None, :])


def test_gradcheck_swin_block_float64():
    torch.manual_seed(4)
    block = SwinV2Block(4, 2, window_size=2, shifted=True, mlp_ratio=2.0).double()
    randomise_time_norms(block)
    x = torch.randn(2, 4, 4, 4, dtype=F64, requires_grad=True)
    t = torch.tensor([0.3, 0.9], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x, t), eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- the model


def test_cpu_preset_keeps_the_resolution():
    torch.manual_seed(5)
    model = ScOT(PRESETS["cpu"])
    levels, cfg = 3, PRESETS["cpu"]
    big = cfg.patch_size * cfg.window_size * 2 ** (levels - 1)
    assert big == 128
    for h, w in [(64, 64), (big, big), (64, 128)]:
        with torch.no_grad():
            out = model(torch.randn(1, 4, h, w), torch.tensor([0.25]))
        assert out.shape == (1, 4, h, w)


def test_inadmissible_inputs_fail_with_the_expectation():
    model = ScOT(tiny_config())
    with pytest.raises(ValueError, match="multiples of patch_size"):
        model(torch.randn(1, 2, 30, 32), torch.zeros(1))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        model(torch.randn(1, 3, 32, 32), torch.zeros(1))
    with pytest.raises(ValueError, match="lead times"):
        model(torch.randn(2, 2, 32, 32), torch.zeros(3))
    with pytest.raises(ValueError, match="not tiled"):
        model(torch.randn(1, 2, 24, 24), torch.zeros(1))  # level-0 grid 12 x 12, windows 4: fine; level 1 6 x 6
    with pytest.raises(KeyError, match="valid: T, B, L, cpu"):
        ScOTConfig.preset("XL")


def test_time_enters_only_through_the_norms_and_is_differentiable():
    torch.manual_seed(6)
    model = ScOT(tiny_config()).double()
    x = torch.randn(2, 2, 32, 32, dtype=F64)
    t0, t1 = torch.tensor([0.1, 0.1], dtype=F64), torch.tensor([0.8, 0.8], dtype=F64)
    with torch.no_grad():
        assert torch.equal(model(x, t0), model(x, t1))  # gamma(t) = 1, beta(t) = 0 at construction
    randomise_time_norms(model)
    t = t0.clone().requires_grad_(True)
    out = model(x, t)
    assert not torch.allclose(out, model(x, t1))
    (grad,) = torch.autograd.grad(out.square().sum(), t)
    assert torch.isfinite(grad).all() and (grad.abs() > 0).all()


def test_samples_are_independent():
    torch.manual_seed(7)
    model = ScOT(tiny_config()).double()
    randomise_time_norms(model)
    x = torch.randn(2, 2, 32, 32, dtype=F64)
    t = torch.tensor([0.2, 0.6], dtype=F64)
    both = model(x, t)
    torch.testing.assert_close(both[1:], model(x[1:], t[1:]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name, expected", [("T", 21e6), ("B", 158e6), ("L", 629e6)])
def test_preset_parameter_counts(name, expected):
    count = parameter_count(PRESETS[name])
    assert abs(count - expected) <= 0.1 * expected, count
    if name == "T":
        assert sum(p.numel() for p in ScOT(PRESETS["T"]).parameters()) == count


def test_reset_io_replaces_only_the_channel_layers():
    torch.manual_seed(8)
    model = ScOT(tiny_config())
    kept = {name: p for name, p in model.named_parameters() if not name.startswith(("embed.proj", "recover"))}
    model.reset_io(in_channels=5, out_channels=1)
    assert (model.config.in_channels, model.config.out_channels) == (5, 1)
    assert model(torch.randn(2, 5, 32, 32), torch.rand(2)).shape == (2, 1, 32, 32)
    after = dict(model.named_parameters())
    assert all(after[name] is p for name, p in kept.items())
    assert after["embed.proj.weight"].shape == (8, 5, 2, 2)
    assert after["recover.mix.weight"].shape == (1, 1, 5, 5)
    with pytest.raises(ValueError, match="in_channels >= 1"):  # refused before any layer changes
        model.reset_io(in_channels=0)
    assert model.config.in_channels == 5 and model.embed.proj.weight.shape == (8, 5, 2, 2)
    assert model(torch.randn(2, 5, 32, 32), torch.rand(2)).shape == (2, 1, 32, 32)


def test_parameter_groups_partition_the_parameters():
    model = ScOT(tiny_config())
    groups = model.parameter_groups()
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    norms = [m for m in model.modules() if isinstance(m, TimeLayerNorm)]
    assert {id(p) for p in groups.time} == {id(p) for m in norms for p in m.parameters()}
    assert all(p.shape[-1] == 1 for p in groups.time if p.dim() == 2)  # Linear(1, C) weights
    assert [name for name, _ in groups.items()] == ["io", "time", "rest"]  # also usable as a mapping
    io = {id(p) for m in (model.embed.proj, model.recover) for p in m.parameters()}
    assert {id(p) for p in groups.io} == io
    opt = torch.optim.AdamW([{"params": groups.io, "lr": 1e-3}, {"params": groups.time, "lr": 1e-4},
                             {"params": groups.rest, "lr": 5e-4}])
    assert len(opt.param_groups) == 3
