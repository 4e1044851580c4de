"""SFNO: spectral layers against references, output-shape contracts, fine-tuning invariants.

The residual floor at the presets' fine-tuning settings: tests/cases/test_sfno_case.py."""

from __future__ import annotations

import math

import pytest
import torch

from sciml.operators.spectral import FourierGrid2D
from sciml.solvers import count_parameters
from sciml.solvers.navier_stokes import GridSymmetries
from sciml.solvers.sfno import (
    SFNO,
    FNO3dBaseline,
    SpectralConv3d,
    TemporalSpectralConv,
    Trainer,
    enlarged_output_layer,
    finetune,
    full_output_modes,
    max_mode,
    relative_l2,
    width_for_parameters,
)

F64 = torch.float64


def band_limited(t: int, n: int, t_span: float = 1.0) -> torch.Tensor:
    """A real trigonometric polynomial of (t, x, y) with |k_t| <= 3, |k_x|, |k_y| <= 4, sampled at (t, n, n)."""
    s = torch.arange(t, dtype=F64) * (t_span / t)
    x = torch.arange(n, dtype=F64) / n
    tt, xx, yy = torch.meshgrid(s, x, x, indexing="ij")
    two_pi = 2 * math.pi
    f = (0.3 + torch.sin(two_pi * (2 * tt + xx)) + 0.5 * torch.cos(two_pi * (3 * tt - 2 * yy + 4 * xx))
         + 0.25 * torch.sin(two_pi * (-tt + 3 * xx + 4 * yy)) + 0.1 * torch.cos(two_pi * 4 * yy))
    return f[None, None]


def identity_layer(modes) -> SpectralConv3d:
    return SpectralConv3d(1, 1, modes).double().set_identity()


# -- SpectralConv3d -------------------------------------------------------------------------


@pytest.fixture(params=["fft", "matrix"])
def transform(request, monkeypatch):
    """Run a test through both implementations of the spatial transforms (FFTs, truncated DFT matrices)."""
    from sciml.solvers.sfno import layers

    monkeypatch.setattr(layers, "MATRIX_DFT_MAX_FRACTION", 0.0 if request.param == "fft" else 100.0)
    return request.param


@pytest.mark.parametrize("out_shape, t_span", [((10, 16, 16), 1.0), ((40, 32, 32), 1.0), ((7, 10, 10), 1.0),
                                                ((9, 48, 48), 1.0), ((33, 20, 20), 0.8), ((13, 16, 16), 5 / 6)])
def test_resampling_reproduces_the_band_limited_function_on_the_new_grid(out_shape, t_span, transform):
    layer = identity_layer((3, 4, 4))
    y = layer(band_limited(10, 16), out_shape=out_shape, t_span=t_span)
    exact = band_limited(out_shape[0], out_shape[1], t_span)
    assert y.shape == exact.shape
    assert torch.allclose(y, exact, rtol=0, atol=1e-12)


def dense_reference(layer: SpectralConv3d, x: torch.Tensor, out_shape, t_span: float = 1.0) -> torch.Tensor:
    """The layer by explicit sums over grid points and modes (no FFT), float64 / complex128."""
    t, n, _ = x.shape[-3:]
    to, no, _ = out_shape
    kt, kx, ky = layer.kept_modes((t, n, n), out_shape)
    Kt, Kx, _ = layer.modes
    w = torch.view_as_complex(layer.weight.detach())
    grid = [torch.arange(m, dtype=F64) for m in (t, n, n)]
    out_grid = [torch.arange(to, dtype=F64) * t_span / to, torch.arange(no, dtype=F64) / no,
                torch.arange(no, dtype=F64) / no]
    y = torch.zeros(x.shape[0], layer.out_channels, to, no, no, dtype=F64)
    for a in range(-kt, kt + 1):
        for b in range(-kx, kx + 1):
            for c in range(0, ky + 1):
                e_in = (torch.exp(-2j * math.pi * a * grid[0] / t)[:, None, None]
                        * torch.exp(-2j * math.pi * b * grid[1] / n)[None, :, None]
                        * torch.exp(-2j * math.pi * c * grid[2] / n)[None, None, :])
                coeff = (x.to(torch.complex128) * e_in).sum(dim=(-3, -2, -1)) / (t * n * n)  # (B, C_in)
                mixed = coeff @ w[Kt + a, Kx + b, c]  # (B, C_out)
                e_out = (torch.exp(2j * math.pi * a * out_grid[0])[:, None, None]
                         * torch.exp(2j * math.pi * b * out_grid[1])[None, :, None]
                         * torch.exp(2j * math.pi * c * out_grid[2])[None, None, :])
                y += (1 if c == 0 else 2) * (mixed[:, :, None, None, None] * e_out).real
    return y


@pytest.mark.parametrize("out_shape, t_span", [((6, 8, 8), 1.0), ((9, 10, 10), 1.0), ((4, 6, 6), 1.0),
                                                ((7, 8, 8), 0.75)])
def test_spectral_conv_equals_a_dense_dft_reference(out_shape, t_span, transform):
    torch.manual_seed(0)
    layer = SpectralConv3d(2, 3, (2, 3, 2)).double()
    x = torch.randn(2, 2, 6, 8, 8, dtype=F64)  # not band-limited: the truncation is tested too
    y = layer(x, out_shape=out_shape, t_span=t_span)
    assert torch.allclose(y, dense_reference(layer, x, out_shape, t_span), rtol=0, atol=1e-12)


def test_kept_modes_stay_below_the_nyquist_frequencies_that_limit_them():
    """Space: below the input's and the output's; time: below the input's only (the output frames are
    values of the time polynomial, however few)."""
    layer = SpectralConv3d(1, 1, (10, 10, 10))
    assert layer.kept_modes((10, 16, 16), (40, 64, 64)) == (4, 7, 7)
    assert layer.kept_modes((40, 64, 64), (7, 12, 12)) == (10, 5, 5)
    assert layer.kept_modes((24, 32, 32), (20, 32, 32)) == (10, 10, 10)
    assert [max_mode(n) for n in (1, 2, 3, 4, 20, 21, 28.8)] == [0, 0, 1, 1, 9, 10, 14]


def test_any_number_of_output_frames_samples_the_same_trajectory():
    """T_out frames are the trajectory of 60 frames at the same times, for T_out = 1 (one frame at the
    window's end) and every other divisor of 60: the output length never truncates the time modes."""
    torch.manual_seed(0)
    model = SFNO().double()
    w = torch.randn(1, 5, 32, 32, dtype=F64)
    with torch.no_grad():
        fine = model(w, out_steps=60)
        for t_out in (1, 2, 3, 4, 5, 6, 12, 20):
            ref = fine[:, [(j + 1) * 60 // t_out - 1 for j in range(t_out)]]
            scale = float((ref - w[:, -1:]).norm())
            assert float((model(w, out_steps=t_out) - ref).norm()) < 1e-12 * scale, t_out
    with pytest.raises(ValueError, match="out_steps >= 1"):
        model(w, out_steps=0)
    with pytest.raises(ValueError, match="latent_steps >= 3"):
        model(w, latent_steps=2)


def test_spectral_layers_gradcheck_in_float64(transform):
    torch.manual_seed(1)
    conv = SpectralConv3d(2, 1, (1, 1, 1)).double()
    x = torch.randn(1, 2, 4, 4, 4, dtype=F64, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, w: _with_weight(conv, w, a, (5, 6, 6), 0.9), (x, weight),
                                    eps=1e-6, atol=1e-8)
    temporal = TemporalSpectralConv(2, 1, 1).double()
    assert torch.autograd.gradcheck(lambda a: temporal(a, out_steps=5), (x,), eps=1e-6, atol=1e-8)


def _with_weight(conv: SpectralConv3d, weight: torch.Tensor, x: torch.Tensor, out_shape, t_span) -> torch.Tensor:
    return torch.func.functional_call(conv, {"weight": weight}, (x,), {"out_shape": out_shape, "t_span": t_span})


def test_default_weights_start_at_neuraloperators_scale():
    """E|W|^2 per complex weight equals that of neuraloperator's SpectralConv (a complex normal)."""
    from neuralop.layers.spectral_convolution import SpectralConv

    torch.manual_seed(0)
    ours = SpectralConv3d(12, 20, (4, 8, 8)).weight.detach().square().sum(-1).mean()
    theirs = SpectralConv(12, 20, n_modes=(9, 17, 16)).weight.to_tensor().detach().abs().square().mean()
    assert abs(float(ours / theirs) - 1.0) < 0.02
    temporal = TemporalSpectralConv(12, 20, modes=200).weight.detach().square().sum(-1).mean()
    assert abs(float(temporal / theirs) - 1.0) < 0.05


def test_temporal_layer_resamples_time_and_leaves_space_alone():
    layer = TemporalSpectralConv(1, 1, 3).double()
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[..., 0] = 1.0
    y = layer(band_limited(10, 12), out_steps=25)
    assert torch.allclose(y, band_limited(25, 12), rtol=0, atol=1e-12)


def test_embedded_layer_computes_the_same_function():
    torch.manual_seed(2)
    small = SpectralConv3d(1, 1, (2, 3, 3)).double()
    big = small.embedded((9, 15, 15))
    x = torch.randn(2, 1, 20, 32, 32, dtype=F64)
    for shape, span in (((20, 32, 32), 1.0), ((50, 32, 32), 0.8)):
        assert torch.allclose(big(x, shape, t_span=span), small(x, shape, t_span=span), rtol=0, atol=1e-14)


# -- SFNO -------------------------------------------------------------------------------------


def small_sfno(**kw) -> SFNO:
    torch.manual_seed(3)
    args = dict(modes=(3, 5, 5), width=6, n_layers=2, out_steps=8, time_padding=2)
    args.update(kw)
    return SFNO(**args).double()


@pytest.mark.parametrize("block_mlp_channels, input_skip", [(0, False), (5, False), (0, True)])
@pytest.mark.parametrize("out_steps", [1, 5, 8, 13, 32])
def test_any_output_length(out_steps, block_mlp_channels, input_skip):
    model = small_sfno(block_mlp_channels=block_mlp_channels, input_skip=input_skip)
    w = torch.randn(2, 4, 16, 16, dtype=F64)
    assert model(w, out_steps=out_steps).shape == (2, out_steps, 16, 16)
    assert model(w[:, :3]).shape == (2, 8, 16, 16)  # any number of input frames too


def test_frames_input_path_fixes_the_input_length_and_keeps_any_output_length():
    model = small_sfno(in_steps=4)
    w = torch.randn(2, 4, 16, 16, dtype=F64)
    assert model.temporal is None
    assert model(w, out_steps=13).shape == (2, 13, 16, 16)
    assert model(w, out_steps=16, latent_steps=40).shape == (2, 16, 16, 16)  # a finer latent grid
    with pytest.raises(ValueError, match="expected 4 input frames, got 3"):
        model(w[:, :3])
    with pytest.raises(ValueError, match="no input_skip with in_steps"):
        small_sfno(in_steps=4, input_skip=True)


def test_identity_output_init_passes_a_band_limited_latent_through():
    model = small_sfno()  # output_init="identity" is the default
    v = band_limited(10, 16)  # |k_t| <= 3, |k_x|, |k_y| <= 4: inside the output modes (3, 5, 5)
    assert torch.allclose(model.output(v), v, rtol=0, atol=1e-13)
    assert not torch.allclose(small_sfno(output_init="random").output(v), v, atol=1e-2)  # scrambled
    with pytest.raises(ValueError, match="output_init 'random' or 'identity'"):
        small_sfno(output_init="zero")


@pytest.mark.parametrize("out_steps", [5, 8, 32])
def test_the_prediction_keeps_the_spatial_mean_of_the_last_input_frame(out_steps):
    """The vorticity of a periodic velocity has zero mean at every time: with conserve_mean the
    predicted mean stays the last frame's for any weights; the authors' model lets it drift."""
    w = torch.randn(3, 4, 16, 16, dtype=F64) + torch.randn(3, 1, 1, 1, dtype=F64)  # nonzero means
    last_mean = w[:, -1].mean(dim=(-2, -1))[:, None]
    for seed in range(3):
        model = small_sfno(output_init="random", output_modes=(4, 7, 7))
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(generator=torch.Generator().manual_seed(seed + p.numel()))
        drift = (model(w, out_steps=out_steps).mean(dim=(-2, -1)) - last_mean).abs().max()
        assert drift < 1e-12
        free = small_sfno(output_init="random", output_modes=(4, 7, 7), conserve_mean=False)
        free.load_state_dict(model.state_dict())
        assert (free(w, out_steps=out_steps).mean(dim=(-2, -1)) - last_mean).abs().max() > 1e-3


@pytest.mark.parametrize("block", ["refiner", "neuralop"])
def test_neuralop_block_is_a_gated_residual_around_the_block(block):
    """neuraloperator's FNO block, sigma(MLP(sigma(K x + W x)) + g x): with K, W and the MLP's output
    layer zeroed it passes gelu(x) on (the identity in the last block); the authors' block gives 0."""
    model = small_sfno(block=block, block_mlp_channels=4, n_layers=1)
    with torch.no_grad():
        for module in (model.spectral[0], model.skips[0]):
            for p in module.parameters():
                p.zero_()
        for p in model.block_mlps[0].fcs[-1].parameters():
            p.zero_()
    proj_in = []
    handle = model.projection.register_forward_hook(lambda mod, args, out: proj_in.append(args[0]))
    lifted = []
    handle2 = model.temporal.register_forward_hook(lambda mod, args, out: lifted.append(out))
    model.latent(torch.randn(2, 4, 8, 8, dtype=F64))
    handle.remove()
    handle2.remove()
    expected = torch.nn.functional.gelu(lifted[0]) if block == "neuralop" else torch.zeros_like(proj_in[0])
    assert torch.allclose(proj_in[0], expected, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="with block_mlp_channels >= 1"):
        small_sfno(block="neuralop")


@pytest.mark.parametrize("output_modes", [None, (2, 3, 3), (4, 7, 7)])
def test_output_floor_bounds_every_prediction_and_is_exact_on_the_output_space(output_modes):
    """The floor is the distance from the target to the set of trajectories the output
    layer can produce: below the error of any model with those output modes, zero for a
    target that a model produced, and a mode outside the kept ones adds exactly its norm."""
    n, t_out = 16, 8
    last = torch.randn(3, n, n, dtype=F64)
    target = last[:, None] + torch.randn(3, t_out, n, n, dtype=F64)
    w = torch.cat([torch.randn(3, 3, n, n, dtype=F64), last[:, None]], dim=1)
    for seed in range(3):
        torch.manual_seed(seed)
        model = SFNO(modes=(3, 5, 5), width=6, n_layers=2, out_steps=t_out, time_padding=2,
                     output_modes=output_modes).double()
        floor = model.output_floor(last, target)
        assert (floor <= relative_l2(model(w), target) + 1e-12).all()
    own = model(w)
    assert model.output_floor(last, own).max() < 1e-10
    kx = model.output.kept_modes((model.latent_steps, n, n), (t_out + 1, n, n))[1]
    x = torch.arange(n, dtype=F64) / n
    outside = torch.cos(2 * math.pi * (kx + 1) * x)[:, None].expand(n, n)  # a mode no output layer keeps
    bumped = own + 0.3 * torch.arange(1, t_out + 1, dtype=F64)[None, :, None, None] * outside
    expected = (bumped - own).flatten(1).norm(dim=1) / bumped.flatten(1).norm(dim=1)
    torch.testing.assert_close(model.output_floor(last, bumped), expected, rtol=1e-10, atol=1e-12)


def test_full_output_modes_keep_everything_below_nyquist():
    model = small_sfno(output_modes=full_output_modes(10, 16))
    kept = model.output.kept_modes((10, 16, 16), (9, 16, 16))
    assert kept == (4, 7, 7)
    assert full_output_modes(24, 64) == (11, 31, 31)


def test_zero_shot_super_resolution_keeps_the_shape_contract():
    model = small_sfno()
    for n in (16, 32, 48):
        w = torch.randn(1, 4, n, n, dtype=F64)
        assert model(w).shape == (1, 8, n, n)
        assert model(w, out_steps=24).shape == (1, 24, n, n)
    with pytest.raises(ValueError, match=r"expected vorticity of shape \(B, T_in, N, N\)"):
        model(torch.randn(4, 16, 16, dtype=F64))


def test_finer_output_samples_the_same_trajectory_which_starts_at_the_last_input():
    """Frame m*j - 1 of an m-times finer output is frame j - 1 of the trained output (same latent),
    and frame t_0 of the window is the last input frame itself."""
    model = small_sfno()
    w = torch.randn(2, 4, 16, 16, dtype=F64)
    coarse = model(w)
    for m in (2, 3, 8):
        fine = model(w, out_steps=m * 8)
        assert torch.allclose(fine[:, m - 1:: m], coarse, rtol=0, atol=1e-12)
    v = model.latent(w)
    assert torch.equal(model.decode(v, w[:, -1], include_start=True)[:, 0], w[:, -1])


def test_enlarged_output_layer_reproduces_the_untuned_prediction():
    model = small_sfno()
    n, latent = 32, 40
    w = torch.randn(2, 4, n, n, dtype=F64)
    v = model.latent(w, latent)
    layer = enlarged_output_layer(model, latent, n)
    assert layer.modes == (19, 15, 15)
    for out_steps in (8, 64):
        untuned = model.decode(v, w[:, -1], out_steps)
        assert torch.allclose(model.decode(v, w[:, -1], out_steps, output=layer), untuned, rtol=0, atol=1e-13)


def _flow_and_model():
    from sciml.solvers.navier_stokes import RK4CN, NavierStokes2D, fno_forcing, gaussian_random_field, simulate

    g = FourierGrid2D(16, 1.0, dtype=F64)
    eq = NavierStokes2D(g, viscosity=1e-2, forcing=fno_forcing(g))
    w = simulate(eq, RK4CN(), gaussian_random_field(g, [0]), n_frames=3, frame_dt=0.1).frames
    model = small_sfno(scale=0.3)
    for p in model.parameters():
        p.requires_grad_(False)
    return eq, model, w


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_finetune_leaves_the_network_alone_and_returns_the_layer_that_made_the_prediction(optimizer):
    eq, model, w = _flow_and_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res0 = finetune(model, w, eq, out_steps=16, frame_dt=0.05, steps=0, optimizer=optimizer)
    assert torch.allclose(res0.before, res0.after, rtol=0, atol=1e-13)
    assert torch.allclose(res0.before, model(w, out_steps=16), rtol=0, atol=1e-13)
    res = finetune(model, w, eq, out_steps=16, frame_dt=0.05, latent_steps=20, steps=12, optimizer=optimizer, lr=1e-2)
    # a smoke check of the descent (an untrained network, a tiny grid): L-BFGS at least halves it
    assert res.residual_after[0] < (0.5 if optimizer == "lbfgs" else 1.0) * res.residual_before[0]
    v = model.latent(w, 20)
    assert torch.allclose(model.decode(v, w[:, -1], 16, output=res.layers[0]), res.after, rtol=0, atol=1e-10)
    # the tuned trajectory keeps the conserved mean (the enlarged layer's mean mode is not a free direction)
    assert (res.after.mean(dim=(-2, -1)) - w[:, -1].mean(dim=(-2, -1))[:, None]).abs().max() < 1e-12
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the network stays frozen


# -- training and the baseline ------------------------------------------------------------


@pytest.mark.parametrize("augment", [False, True])
def test_relative_l2_and_trainer_state_round_trip(augment):
    x, y = torch.randn(6, 3, 16, 16), torch.randn(6, 4, 16, 16)
    assert torch.allclose(relative_l2(2 * y, y), torch.ones(6))
    symmetries = GridSymmetries.of(16).random if augment else None

    def make():
        torch.manual_seed(4)
        return Trainer(SFNO(modes=(2, 3, 3), width=4, n_layers=1, out_steps=4, time_padding=2), x, y,
                       epochs=3, batch_size=4, lr=1e-2, seed=5, augment=symmetries)

    ref = make()
    for _ in range(3):
        ref.run_epoch()
    resumed = make()
    resumed.run_epoch()
    state = resumed.state_dict()
    fresh = make()
    fresh.load_state_dict(state)
    assert fresh.epoch == 1 and fresh.scheduler.last_epoch == resumed.scheduler.last_epoch
    fresh.run_epoch()
    fresh.run_epoch()
    assert [h["loss"] for h in fresh.history] == [h["loss"] for h in ref.history]
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.parameters(), ref.model.parameters()))
    if augment:  # the windows were transformed: another training than without augmentation
        plain = make()
        plain.augment = None
        plain.run_epoch()
        assert plain.history[0]["loss"] != ref.history[0]["loss"]


def test_fno_baseline_shapes():
    net = FNO3dBaseline(4, 6, modes=(2, 3, 3), width=5, n_layers=2, scale=0.5)
    assert net(torch.randn(2, 4, 16, 16)).shape == (2, 6, 16, 16)
    with pytest.raises(ValueError, match=r"expected vorticity of shape \(B, 4, N, N\)"):
        net(torch.randn(2, 3, 16, 16))


def test_the_peer_at_comparable_parameters_holds_as_many_real_spectral_weights():
    # Both keep |k_t| <= K_t, |k_x| <= K_x, 0 <= k_y <= K_y: (2K_t+1)(2K_x+1)(K_y+1) complex weights per
    # channel pair and layer, stored by neuraloperator as complex64 and by us as real pairs. Counted in
    # real numbers the two bodies are the same size at the same width, so the width matched to the
    # SFNO's parameter count is the SFNO's (complex entries counted once, it came out ~1.4x wider).
    modes, width = (3, 6, 6), 12
    sfno = SFNO(modes=modes, width=width, n_layers=3, out_steps=8, time_padding=2)
    spectral_reals = 3 * width**2 * (2 * 3 + 1) * (2 * 6 + 1) * (6 + 1) * 2
    fno = FNO3dBaseline(5, 8, modes, width=width, n_layers=3)
    assert count_parameters(sfno.spectral) == spectral_reals
    assert count_parameters(fno.fno.fno_blocks.convs) == spectral_reals + 3 * width  # + a bias per channel
    matched = width_for_parameters(count_parameters(sfno), lambda w: FNO3dBaseline(5, 8, modes, w, 3))
    assert matched == width


def test_invalid_sizes_are_named():
    from sciml.operators.spectral import FourierGrid2D
    from sciml.solvers.navier_stokes import NavierStokes2D
    from sciml.solvers.sfno import finetune
    from sciml.solvers.sfno.training import predict

    model = SFNO(modes=(2, 4, 4), width=4, n_layers=1, out_steps=4, time_padding=2).double()
    w = torch.randn(2, 3, 16, 16, dtype=F64)
    eq = NavierStokes2D(FourierGrid2D(16, length=1.0), viscosity=1e-3)
    with pytest.raises(ValueError, match="at least one trajectory"):
        model(w[:0])
    for kwargs in ({"out_steps": 0}, {"out_steps": 4, "steps": -1}):
        with pytest.raises(ValueError, match="out_steps >= 1 and steps >= 0"):
            finetune(model, w, eq, frame_dt=0.1, **kwargs)
    with pytest.raises(ValueError, match="at least one trajectory, out_steps >= 1"):
        finetune(model, w[:0], eq, out_steps=4, frame_dt=0.1)
    with pytest.raises(ValueError, match="batch_size >= 1"):
        predict(model, w, 0)
    with pytest.raises(ValueError, match=r"latent_steps >= 3 \(one time mode\), in_steps >= 1"):
        SFNO(out_steps=1, time_padding=1)
    with pytest.raises(ValueError, match="in_steps >= 1 if given"):
        SFNO(in_steps=0)
