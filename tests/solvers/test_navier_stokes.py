"""Property tests of the pseudo-spectral Navier–Stokes solver (float64 unless stated)."""

import math

import numpy as np
import pytest
import torch

from sciml.operators.spectral import FourierGrid2D
from sciml.solvers.navier_stokes import (
    CNEuler,
    GridSymmetries,
    HeunCN,
    NavierStokes2D,
    RK4CN,
    Stepper,
    advance,
    fno_forcing,
    frame_substeps,
    gaussian_random_field,
    kolmogorov_forcing,
    mcwilliams,
    piecewise_constant,
    simulate,
    sine_sum,
    taylor_green,
    time_derivative,
)

STEPPERS = [CNEuler, HeunCN, RK4CN]
TWO_PI = 2.0 * math.pi


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny grids: threads only add contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def band_limited_hat(grid, seeds):
    """Spectrum of a random vorticity with every mode kept by the 2/3 rule."""
    w = gaussian_random_field(grid, seeds, alpha=1.5, tau=3.0)
    return grid.rfft(w) * grid.dealias


def rel(a, b):
    return float((a - b).abs().pow(2).sum().sqrt() / b.abs().pow(2).sum().sqrt())


# -- the explicit term ------------------------------------------------------------------


@pytest.mark.parametrize("n, length", [(32, 1.0), (27, TWO_PI)])
def test_dealiased_advection_conserves_energy_and_enstrophy(n, length):
    g = FourierGrid2D(n, length)
    eq = NavierStokes2D(g, viscosity=0.0)
    wh = band_limited_hat(g, [0, 1, 2])
    nh = eq.nonlinear_hat(wh)
    w = g.rfft_weights

    def inner(a, b):  # <a, b> over the full spectrum, per batch entry
        return ((a.conj() * b).real * w).sum((-2, -1))

    def norm(a):
        return inner(a, a).sqrt()

    psi = wh * g.inv_k2
    assert float((inner(psi, nh) / (norm(psi) * norm(nh))).abs().max()) < 1e-13  # energy
    assert float((inner(wh, nh) / (norm(wh) * norm(nh))).abs().max()) < 1e-13  # enstrophy
    assert float((nh.abs() * (1 - g.dealias)).max()) == 0.0  # output is dealiased


def test_nonlinear_term_is_differentiable_and_its_fast_path_is_identical():
    g = FourierGrid2D(8)
    eq = NavierStokes2D(g, viscosity=1e-2, forcing=fno_forcing(g))
    w = gaussian_random_field(g, [0, 1]).requires_grad_()

    def explicit(x):
        return g.irfft(eq.nonlinear_hat(g.rfft(x)))

    assert torch.autograd.gradcheck(explicit, (w,))
    differentiable = explicit(w)  # allocating path
    with torch.no_grad():
        assert torch.equal(explicit(w), differentiable.detach())  # buffered path


def test_velocity_is_divergence_free_and_gives_back_the_vorticity():
    g = FourierGrid2D(32, TWO_PI)
    eq = NavierStokes2D(g, viscosity=1e-3)
    omega = g.irfft(band_limited_hat(g, [3, 4]))
    u, v = eq.velocity(g.rfft(omega))
    ux, uy = g.grad(g.rfft(u))
    vx, vy = g.grad(g.rfft(v))
    scale = float(omega.abs().max())
    assert float(g.irfft(ux + vy).abs().max()) < 1e-12 * scale
    curl = g.irfft(vx - uy)
    assert torch.allclose(curl, omega - omega.mean((-2, -1), keepdim=True), atol=1e-12 * scale)
    # Diagnostics agree with their physical-space definitions.
    wh = g.rfft(omega)
    assert torch.allclose(eq.energy(wh), 0.5 * (u * u + v * v).mean((-2, -1)), rtol=1e-12)
    assert torch.allclose(eq.enstrophy(wh), 0.5 * (omega * omega).mean((-2, -1)), rtol=1e-12)
    assert float(eq.max_speed(wh)) == pytest.approx(float((u * u + v * v).max().sqrt()), rel=1e-12)
    assert eq.cfl_dt(wh, 0.5) == pytest.approx(0.5 * g.dx / float(eq.max_speed(wh)))


# -- exact solutions -----------------------------------------------------------------------


@pytest.mark.parametrize("length", [1.0, TWO_PI])
def test_taylor_green_is_a_steady_euler_solution(length):
    g = FourierGrid2D(32, length)
    eq = NavierStokes2D(g, viscosity=0.0)
    amplitude, kappa = 1.5, 2 * math.pi * 2 / length
    wh = g.rfft(taylor_green(g, batch=2, k=2, amplitude=amplitude))
    scale = float(wh.abs().max()) * amplitude * kappa  # |omega_hat| |u| |k|
    assert float(eq.nonlinear_hat(wh).abs().max()) < 1e-13 * scale
    # The vortex array is unstable (growth rate ~ amplitude * kappa), so round-off is
    # watched over one eddy turnover time.
    for stepper in STEPPERS:
        out = advance(eq, stepper(), wh, duration=1.0 / (amplitude * kappa), n_steps=10)
        assert rel(out, wh) < 1e-13, stepper.__name__


@pytest.mark.parametrize("stepper", STEPPERS)
@pytest.mark.parametrize("length", [1.0, TWO_PI])
def test_taylor_green_decays_as_exp_minus_2_nu_k2_t(stepper, length):
    g = FourierGrid2D(16, length)
    k, duration = 2, 1.0
    kappa = 2 * math.pi * k / length  # physical wavenumber; |k|^2 = 2 kappa^2
    nu = 0.25 / (kappa**2 * duration)  # decays by exp(-1/2) over the run
    eq = NavierStokes2D(g, viscosity=nu)
    w0 = taylor_green(g, batch=1, k=k)
    n_steps = 200
    out = g.irfft(advance(eq, stepper(), g.rfft(w0), duration, n_steps))
    rate = 2 * nu * kappa**2
    exact = math.exp(-rate * duration) * w0
    # Crank-Nicolson's error on one linear mode: (rate dt)^3 / 12 per step.
    assert rel(out, exact) < 2 * n_steps * (rate * duration / n_steps) ** 3 / 12


@pytest.mark.parametrize("stepper", STEPPERS)
def test_kolmogorov_laminar_flow_spins_up_exactly(stepper):
    # With f = A cos(kappa y) the shear flow omega_s = A cos(kappa y) / (nu kappa^2 + mu) is
    # steady and u.grad(omega) = 0 along the way: omega(t) = omega_s (1 - exp(-c t)).
    g = FourierGrid2D(32, TWO_PI)
    nu, mu, k = 0.01, 0.1, 4
    c = nu * k**2 + mu
    eq = NavierStokes2D(g, viscosity=nu, drag=mu, forcing=kolmogorov_forcing(g, k=k))
    steady = -4.0 * torch.cos(k * g.y) / c
    run = simulate(eq, stepper(), torch.zeros(1, 32, 32, dtype=torch.float64),
                   n_frames=2, frame_dt=1.0, dt=0.01)
    exact = steady * (1 - torch.exp(-c * run.times))[:, None, None]
    # The explicit term is the constant forcing here, so every scheme is as accurate
    # as Crank-Nicolson on dw/dt = -c w + f: second order.
    assert rel(run.frames[0], exact) < (c * 0.01) ** 2


# -- temporal order --------------------------------------------------------------------------


def measured_order(stepper, nu, drag=0.0):
    """Slope of log(error) against log(dt) at dt = T/8, T/16, T/32 against a fine run."""
    g = FourierGrid2D(32, TWO_PI)
    eq = NavierStokes2D(g, viscosity=nu, drag=drag)
    wh = g.rfft(sine_sum(g, [0], n_terms=12, max_wavenumber=3))  # band-limited, max|u| ~ 2
    duration, counts = 1.0, [8, 16, 32]
    ref = advance(eq, stepper, wh, duration, counts[-1] * 16)
    errors = [rel(advance(eq, stepper, wh, duration, n), ref) for n in counts]
    return np.polyfit(np.log([duration / n for n in counts]), np.log(errors), 1)[0]


@pytest.mark.parametrize(
    "stepper, nu, drag, order",
    [
        (CNEuler, 0.01, 0.0, 1),
        (HeunCN, 0.01, 0.0, 2),
        (RK4CN, 0.01, 0.0, 2),
        (RK4CN, 0.0, 0.3, 2),
        (RK4CN, 0.0, 0.0, 4),
    ],
)
def test_temporal_order_by_self_convergence(stepper, nu, drag, order):
    if nu > 0 or drag > 0:
        assert stepper.order == order
    assert measured_order(stepper(), nu, drag) == pytest.approx(order, abs=0.3)


def test_rk4cn_never_increases_unforced_enstrophy_at_cfl_one_half():
    g = FourierGrid2D(64, TWO_PI)
    eq = NavierStokes2D(g, viscosity=1e-4)
    wh = g.rfft(mcwilliams(g, [0, 1]))
    stepper = RK4CN()
    z = eq.enstrophy(wh)
    for _ in range(150):
        wh = stepper.step(eq, wh, eq.cfl_dt(wh, cfl=0.5))
        z_new = eq.enstrophy(wh)
        assert bool((z_new <= z * (1 + 1e-14)).all())
        z = z_new


# -- simulate -----------------------------------------------------------------------------


def test_simulate_records_frames_times_and_steps():
    g = FourierGrid2D(16)
    eq = NavierStokes2D(g, viscosity=1e-3, forcing=fno_forcing(g))
    w0 = gaussian_random_field(g, [0, 1, 2])
    run = simulate(eq, HeunCN(), w0, n_frames=4, frame_dt=0.1, dt=0.03, t0=2.0)
    assert run.frames.shape == (3, 5, 16, 16) and run.frames.dtype == torch.float64
    assert torch.equal(run.frames[:, 0], w0)
    assert torch.allclose(run.times, 2.0 + 0.1 * torch.arange(5, dtype=torch.float64))
    assert run.steps == 4 * 4 and torch.allclose(run.dts, torch.full((4,), 0.025).double())
    # frame_dt / dt that is an integer up to round-off is not rounded up.
    assert simulate(eq, CNEuler(), w0, n_frames=1, frame_dt=0.1, dt=0.01).steps == 10
    # The frames are the states advance() reaches.
    wh = g.rfft(w0)
    for k in range(1, 5):
        wh = advance(eq, HeunCN(), wh, 0.1, 4)
        assert torch.equal(run.frames[:, k], g.irfft(wh))


def test_simulate_cfl_steps_use_the_reduced_max_speed():
    g = FourierGrid2D(32, TWO_PI)
    eq = NavierStokes2D(g, viscosity=1e-3)
    w0 = mcwilliams(g, [0, 1])
    seen = []

    def reduce_max(u):
        seen.append(u)
        return 3.0  # as if another rank had faster flow

    run = simulate(eq, RK4CN(), w0, n_frames=2, frame_dt=0.2, cfl=0.5, reduce_max=reduce_max)
    n_sub = math.ceil(0.2 * 3.0 / (0.5 * g.dx))
    assert run.steps == 2 * n_sub and len(seen) == 2
    assert seen[0] == pytest.approx(float(eq.max_speed(g.rfft(w0))))
    local = simulate(eq, RK4CN(), w0, n_frames=1, frame_dt=0.2)
    assert local.steps == math.ceil(0.2 * seen[0] / (0.5 * g.dx))


def test_simulate_restarts_bit_for_bit_from_a_callback_state():
    g = FourierGrid2D(16, TWO_PI)
    eq = NavierStokes2D(g, viscosity=1e-2, drag=0.1, forcing=kolmogorov_forcing(g))
    w0 = sine_sum(g, [5, 6])
    saved = {}

    def callback(k, omega_hat, t):
        saved[k] = (omega_hat.clone(), t)

    full = simulate(eq, RK4CN(), w0, n_frames=4, frame_dt=0.25, callback=callback)
    assert sorted(saved) == [1, 2, 3, 4] and saved[2][1] == pytest.approx(0.5)
    rest = simulate(eq, RK4CN(), saved[2][0], n_frames=2, frame_dt=0.25, t0=saved[2][1])
    assert torch.equal(rest.frames, full.frames[:, 2:])
    assert torch.allclose(rest.times, full.times[2:])


def test_simulate_checks_its_input():
    g = FourierGrid2D(16)
    eq = NavierStokes2D(g, viscosity=1e-3)
    with pytest.raises(ValueError, match=r"vorticity of shape \(B, 16, 16\), got \(16, 16\)"):
        simulate(eq, RK4CN(), torch.zeros(16, 16, dtype=torch.float64), n_frames=1, frame_dt=0.1)
    with pytest.raises(ValueError, match="dtype torch.float64"):
        simulate(eq, RK4CN(), torch.zeros(1, 16, 16), n_frames=1, frame_dt=0.1)
    with pytest.raises(TypeError):
        Stepper()


# -- initial conditions ----------------------------------------------------------------------


def test_gaussian_random_field_rms_and_spectrum():
    n, seeds = 64, list(range(48))
    g = FourierGrid2D(n)
    w = gaussian_random_field(g, seeds)
    assert float(w.pow(2).mean().sqrt()) == pytest.approx(0.26, rel=0.05)
    assert float(w.mean((-2, -1)).abs().max()) < 1e-12
    # E|omega_hat_m|^2 / N^4 = 2 sigma^2 (4 pi^2 |m|^2 + tau^2)^(-alpha) with sigma = tau^(alpha-1).
    m = torch.fft.fftfreq(n, 1 / n, dtype=torch.float64)
    m2 = m[:, None] ** 2 + m[None, :] ** 2
    prescribed = 2 * 7.0 ** (2 * 1.5) * (4 * math.pi**2 * m2 + 49.0) ** -2.5
    ratio = (torch.fft.fft2(w).abs() ** 2 / n**4 / prescribed).mean(0)  # exponential, mean 1
    shell = m2.sqrt().round()
    for r in range(1, n // 3):
        sel = shell == r
        count = int(sel.sum()) * len(seeds) / 2  # m and -m are one complex variable
        assert float(ratio[sel].mean()) == pytest.approx(1.0, abs=5 / math.sqrt(count)), r


def test_mcwilliams_normalisation():
    g = FourierGrid2D(128, TWO_PI)
    w = mcwilliams(g, [0, 1, 2])
    eq = NavierStokes2D(g, viscosity=0.0)
    u, v = eq.velocity(g.rfft(w))
    assert torch.allclose(2 * (u * u + v * v).mean((-2, -1)), torch.ones(3).double(), rtol=1e-12)
    umax = (u * u + v * v).amax((-2, -1)).sqrt()
    assert 1.3 < float(umax.mean()) < 2.2  # about 1.7


@pytest.mark.parametrize(
    "make",
    [
        lambda g, s: gaussian_random_field(g, s),
        lambda g, s: mcwilliams(g, s),
        lambda g, s: piecewise_constant(g, s, n_patches=5),
        lambda g, s: sine_sum(g, s, n_terms=4, max_wavenumber=3),
    ],
    ids=["grf", "mcwilliams", "patches", "sines"],
)
def test_random_fields_depend_on_their_own_seed_only(make):
    g = FourierGrid2D(32, TWO_PI)
    batch = make(g, [11, 12, 13])
    assert batch.shape == (3, 32, 32) and batch.dtype == torch.float64
    assert torch.equal(batch[1], make(g, [12])[0])
    assert torch.equal(batch[2], make(g, [99, 13, 0])[1])
    assert not torch.equal(batch[0], batch[1])
    assert float(batch.mean((-2, -1)).abs().max()) < 1e-12
    g32 = FourierGrid2D(32, TWO_PI, dtype=torch.float32)
    assert torch.equal(make(g32, [12])[0], batch[1].float())


def test_forcings_are_periodic_and_as_documented():
    for length in (1.0, TWO_PI):
        g = FourierGrid2D(16, length)
        f = fno_forcing(g)
        power = g.rfft(f).abs() > 1e-9 * g.n**2
        assert int(power.sum()) == 1 and bool(power[1, 1])  # the single mode m = (1, 1)
    g = FourierGrid2D(16, TWO_PI)
    assert torch.allclose(kolmogorov_forcing(g), -4 * torch.cos(4 * g.y))
    g1 = FourierGrid2D(16)
    arg = TWO_PI * (g1.x + g1.y)
    assert torch.allclose(fno_forcing(g1), 0.1 * (torch.sin(arg) + torch.cos(arg)))


# -- precision ---------------------------------------------------------------------------------


def test_float32_run_agrees_with_float64():
    runs = {}
    for dtype in (torch.float32, torch.float64):
        g = FourierGrid2D(32, dtype=dtype)
        eq = NavierStokes2D(g, viscosity=1e-3, forcing=fno_forcing(g))
        w0 = gaussian_random_field(g, [0, 1])
        runs[dtype] = simulate(eq, RK4CN(), w0, n_frames=2, frame_dt=0.1, dt=0.01).frames
        assert runs[dtype].dtype == dtype
    assert rel(runs[torch.float32].double(), runs[torch.float64]) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (run on a GPU machine)")
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 1e-5)])
def test_cuda_run_agrees_with_the_cpu_run(dtype, tol):
    """Same grid, forcing, initial field and steps on both devices: the same trajectory to round-off."""
    runs = {}
    for device in ("cpu", "cuda"):
        g = FourierGrid2D(64, dtype=dtype, device=device)
        eq = NavierStokes2D(g, viscosity=1e-3, forcing=fno_forcing(g))
        w0 = gaussian_random_field(g, [0, 1, 2])
        runs[device] = simulate(eq, RK4CN(), w0, n_frames=3, frame_dt=0.1).frames
        assert runs[device].device.type == device
    assert rel(runs["cuda"].cpu(), runs["cpu"]) < tol


# -- residual of a trajectory -------------------------------------------------------------


def _fine_trajectory(n_frames: int, frame_dt: float, n: int = 32, nu: float = 1e-2):
    """A solver trajectory whose own time error is far below the BDF errors measured."""
    from sciml.solvers.navier_stokes import RK4CN, NavierStokes2D, simulate

    g = FourierGrid2D(n, length=2 * math.pi, dtype=torch.float64)
    eq = NavierStokes2D(g, viscosity=nu)
    w0 = mcwilliams(g, seeds=[11])
    run = simulate(eq, RK4CN(), w0, n_frames=n_frames, frame_dt=frame_dt, dt=frame_dt / 8)
    return g, eq, run.frames


@pytest.mark.parametrize("order", [1, 2, 3])
def test_residual_of_solver_trajectory_converges_at_bdf_order(order):
    from sciml.solvers.navier_stokes import nse_residual

    T = 0.4
    norms = []
    for m in (8, 16, 32):
        g, eq, frames = _fine_trajectory(m, T / m)
        r = nse_residual(eq, frames, T / m, order=order)
        norms.append(float(g.space_time_norm(r, T / m)))
    slopes = [math.log2(norms[i] / norms[i + 1]) for i in range(2)]
    assert abs(slopes[-1] - order) < 0.3, (norms, slopes)


def test_residual_grows_with_injected_error():
    from sciml.solvers.navier_stokes import nse_residual

    g, eq, frames = _fine_trajectory(16, 0.025)
    noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = g.irfft(g.rfft(noise) * (g.k2 < 36))  # smooth perturbation
    base = float(g.space_time_norm(nse_residual(eq, frames, 0.025), 0.025))
    values = [float(g.space_time_norm(nse_residual(eq, frames + eps * noise, 0.025), 0.025))
              for eps in (1e-3, 1e-2, 1e-1)]
    assert base < values[0] < values[1] < values[2]
    assert values[2] > 10 * base


def test_residual_gradcheck():
    from sciml.solvers.navier_stokes import NavierStokes2D, nse_residual

    g = FourierGrid2D(8, length=1.0, dtype=torch.float64)
    eq = NavierStokes2D(g, viscosity=0.05, drag=0.1, forcing=fno_forcing(g))
    w = torch.randn(1, 4, 8, 8, dtype=torch.float64, requires_grad=True)

    def loss(x):
        return g.space_time_norm(nse_residual(eq, x, 0.1, order=2), 0.1).square().sum()

    assert torch.autograd.gradcheck(loss, (w,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("frames", [2, 3])
def test_residual_with_a_forcing_per_trajectory_is_each_trajectorys_own(frames):
    """A (B, N, N) forcing belongs to the B trajectories, also when B equals the number of frames T
    (the time axis must not take it); a solver trajectory of each forcing has a small residual."""
    from sciml.solvers.navier_stokes import NavierStokes2D, nse_residual

    g = FourierGrid2D(16, length=1.0, dtype=torch.float64)
    f = torch.stack([fno_forcing(g), -2.0 * kolmogorov_forcing(g, 2)])
    w = torch.randn(2, frames, 16, 16, dtype=torch.float64)
    both = nse_residual(NavierStokes2D(g, 1e-3, forcing=f), w, 0.1, order=1)
    for b in range(2):
        alone = nse_residual(NavierStokes2D(g, 1e-3, forcing=f[b]), w[b:b + 1], 0.1, order=1)[0]
        torch.testing.assert_close(both[b], alone, rtol=0, atol=1e-12 * float(alone.abs().max()))


def test_the_explicit_term_refuses_a_field_for_a_spectrum_and_a_forcing_batch_that_does_not_fit():
    g = FourierGrid2D(16, length=1.0, dtype=torch.float64)
    eq = NavierStokes2D(g, 1e-3, forcing=torch.stack([fno_forcing(g), fno_forcing(g)]))
    w = torch.randn(2, 16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"vorticity spectrum omega_hat, complex of shape \(\.\.\., 16, 9\)"):
        eq.nonlinear_hat(w)
    with pytest.raises(ValueError, match=r"the forcing's batch \(2,\) does not fit the state's \(\)"):
        eq.nonlinear_hat(g.rfft(w[0]))
    assert eq.nonlinear_hat(g.rfft(w)).shape == (2, 16, 9)


def test_time_derivative_exact_for_polynomials():
    from sciml.solvers.navier_stokes import time_derivative

    t = torch.arange(7, dtype=torch.float64) * 0.3
    frames = (1 + 2 * t - t**2 + 0.5 * t**3)[None, :, None]
    exact = (2 - 2 * t + 1.5 * t**2)[None, :, None]
    assert torch.allclose(time_derivative(frames, 0.3, order=3), exact, atol=1e-12)
    with pytest.raises(ValueError, match="more than `order` frames"):
        time_derivative(frames[:, :2], 0.3, order=2)


# -- symmetries -------------------------------------------------------------------------


def _candidates(n):
    """Every grid isometry as a plain function of a field: rotations/reflections of the square by
    index arithmetic (independent of the flips and transposes of the implementation), then a shift,
    with the pseudo-scalar sign."""
    i = torch.arange(n)
    out = []
    for a, b, c, d in [(1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0),
                       (-1, 0, 0, 1), (1, 0, 0, -1), (0, 1, 1, 0), (0, -1, -1, 0)]:
        det = a * d - b * c
        for sx in range(n):
            for sy in range(n):
                # new field at (x, y) = det * old field at g^-1((x, y) - s), g = [[a, b], [c, d]] (orthogonal)
                x, y = (i[:, None] - sx), (i[None, :] - sy)
                src_x, src_y = (a * x + c * y) % n, (b * x + d * y) % n
                out.append(lambda w, sx_=src_x, sy_=src_y, det_=det: det_ * w[..., sx_, sy_])
    return out


@pytest.mark.parametrize("forcing", ["none", "fno", "kolmogorov"])
def test_grid_symmetries_are_exactly_the_isometries_that_keep_the_forcing(forcing):
    n = 8
    g = FourierGrid2D(n, TWO_PI if forcing == "kolmogorov" else 1.0)
    f = {"none": None, "fno": fno_forcing(g), "kolmogorov": kolmogorov_forcing(g, k=2)}[forcing]
    group = GridSymmetries.of(n, f)
    expected = {"none": 8 * n * n, "fno": 4 * n, "kolmogorov": 4 * n * 2}[forcing]
    assert len(group) == expected
    w = torch.randn(3, n, n, dtype=torch.float64)
    # the candidates (an independent construction) that keep the forcing, as their images of w
    keep = [c for c in _candidates(n) if f is None or torch.allclose(c(f), f, atol=1e-12)]
    assert len(keep) == expected
    theirs = {tuple(c(w).flatten().round(decimals=10).tolist()) for c in keep}
    ours = {tuple(group.apply(w, e).flatten().round(decimals=10).tolist()) for e in range(len(group))}
    assert ours == theirs


@pytest.mark.parametrize("forcing", ["none", "fno"])
def test_solver_commutes_with_the_grid_symmetries(forcing):
    """A symmetry of the equation maps the solution from an initial state to the solution from its image."""
    n = 24
    g = FourierGrid2D(n, 1.0)
    eq = NavierStokes2D(g, viscosity=1e-3, forcing=fno_forcing(g) if forcing == "fno" else None)
    group = GridSymmetries.of(n, eq.forcing)
    w0 = gaussian_random_field(g, [3])
    gen = torch.Generator().manual_seed(0)
    elements = torch.randint(len(group), (4,), generator=gen).tolist()
    run = simulate(eq, RK4CN(), w0, n_frames=3, frame_dt=0.1, dt=0.02)
    for e in elements:
        image = simulate(eq, RK4CN(), group.apply(w0, e), n_frames=3, frame_dt=0.1, dt=0.02)
        assert rel(image.frames, group.apply(run.frames, e)) < 1e-12
    # a reflection without its sign is not a symmetry: the advection runs the wrong way
    reflection = next(e for e in range(len(group)) if int(group.ops[e]) == 4)
    wrong = simulate(eq, RK4CN(), -group.apply(w0, reflection), n_frames=3, frame_dt=0.1, dt=0.02)
    assert rel(wrong.frames[:, -1], -group.apply(run.frames, reflection)[:, -1]) > 1e-3


def test_grid_symmetries_random_maps_inputs_and_targets_alike():
    n = 8
    group = GridSymmetries.of(n)
    x, y = torch.randn(5, 2, n, n), torch.randn(5, 3, n, n)
    gen = torch.Generator().manual_seed(1)
    xa, ya = group.random(gen, x, y)
    pick = torch.randint(len(group), (5,), generator=torch.Generator().manual_seed(1))
    for b in range(5):
        assert torch.equal(xa[b], group.apply(x[b], int(pick[b])))
        assert torch.equal(ya[b], group.apply(y[b], int(pick[b])))
    with pytest.raises(ValueError, match=r"\(\.\.\., 8, 8\)"):
        group.apply(torch.randn(4, 6, 6), 0)
    with pytest.raises(ValueError, match="shape"):
        GridSymmetries.of(8, torch.ones(6, 6))


@pytest.mark.parametrize("call, message", [
    (lambda g: kolmogorov_forcing(g, k=0.5), "positive integer wavenumber k (a periodic forcing), got 0.5"),
    (lambda g: taylor_green(g, batch=0), "a batch of at least one field, got 0"),
    (lambda g: taylor_green(g, batch=2.7), "a batch of at least one field, got 2.7"),
    (lambda g: mcwilliams(g, [0], k0=0.0), "positive, finite peak wavenumber k0, got 0.0"),
    (lambda g: frame_substeps(0.0, 1.0, g.dx), "positive, finite frame_dt, got 0.0"),
    (lambda g: frame_substeps(0.1, 1.0, g.dx, cfl=0.0), "cfl > 0, got 0.0"),
    (lambda g: frame_substeps(0.1, 1.0, g.dx, dt=0.0), "positive, finite dt, got 0.0"),
    (lambda g: time_derivative(torch.zeros(1, 3, 4, 4), 0.0), "positive, finite frame_dt, got 0.0"),
])
def test_invalid_arguments_are_named(call, message):
    import re

    with pytest.raises(ValueError, match=re.escape(message)):
        call(FourierGrid2D(16))
