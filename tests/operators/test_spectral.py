"""Property tests of the Fourier grid: exact calculus, Parseval, dealiasing, Sobolev norms."""

import math
import re

import pytest
import torch

from sciml.operators.spectral import FourierGrid2D, fourier_resample

DOMAINS = [1.0, 2.0 * math.pi]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny grids: threads only add contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def band_limited(grid: FourierGrid2D, batch: int, seed: int = 0) -> torch.Tensor:
    """Random real field whose modes all satisfy the 2/3 rule, shape (batch, N, N)."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn((batch, grid.n, grid.n), generator=gen, dtype=torch.float64)
    return grid.irfft(grid.rfft(f) * grid.dealias)


@pytest.mark.parametrize("length", DOMAINS)
def test_wavenumbers_are_physical_and_match_coordinates(length):
    g = FourierGrid2D(16, length)
    assert g.dx == pytest.approx(length / 16)
    assert torch.equal(g.x[:, 0], g.x[:, 5]) and torch.equal(g.y[0], g.y[7])
    assert g.x[3, 0] == pytest.approx(3 * length / 16)
    # cos(2 pi (3x - 2y)/L) has the modes m = +-(3, -2); the rfft keeps m_y >= 0.
    f = torch.cos(2 * math.pi * (3 * g.x - 2 * g.y) / length)
    i, j = divmod(int(g.rfft(f).abs().argmax()), g.n // 2 + 1)
    k = 2 * math.pi / length
    assert (float(g.kx[i, 0]), float(g.ky[0, j])) == pytest.approx((-3 * k, 2 * k))
    assert torch.allclose(g.k2, g.kx**2 + g.ky**2)
    assert g.inv_k2[0, 0] == 0 and torch.allclose(g.inv_k2[1:] * g.k2[1:], torch.ones(()).double())


@pytest.mark.parametrize("n", [16, 15])
def test_rfft_weights_give_parseval(n):
    g = FourierGrid2D(n, 3.0)
    f = torch.randn((2, n, n), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fh = g.rfft(f)
    half = ((fh.real**2 + fh.imag**2) * g.rfft_weights).sum((-2, -1))
    full = torch.fft.fft2(f).abs().pow(2).sum((-2, -1))
    assert torch.allclose(half, full, rtol=1e-13)
    assert torch.allclose(half / n**4, f.pow(2).mean((-2, -1)), rtol=1e-13)


@pytest.mark.parametrize("length", DOMAINS)
def test_grad_and_laplacian_are_exact_on_trigonometric_fields(length):
    g = FourierGrid2D(24, length)
    a, b = 2 * math.pi * 3 / length, 2 * math.pi * 5 / length
    f = torch.sin(a * g.x) * torch.cos(b * g.y)
    fx, fy = g.grad(g.rfft(f))
    assert torch.allclose(g.irfft(fx), a * torch.cos(a * g.x) * torch.cos(b * g.y), atol=1e-12 * a)
    assert torch.allclose(g.irfft(fy), -b * torch.sin(a * g.x) * torch.sin(b * g.y), atol=1e-12 * b)
    lap = g.irfft(g.laplacian(g.rfft(f)))
    assert torch.allclose(lap, -(a**2 + b**2) * f, atol=1e-12 * (a**2 + b**2))


def test_dealiased_product_equals_the_exact_product_on_kept_modes():
    # Reference: the product on a twice finer grid, where it has no aliasing at all.
    n, fine = 24, 48
    g = FourierGrid2D(n)
    f, h = band_limited(g, 2, seed=2), band_limited(g, 2, seed=3)
    idx = torch.fft.fftfreq(n, 1 / n).long()  # coarse modes, as (wrapping) fine indices
    rows, cols = idx[:, None], idx[None, :]

    def refine(x):
        big = torch.zeros((2, fine, fine), dtype=torch.complex128)
        big[:, rows, cols] = torch.fft.fft2(x)
        return torch.fft.ifft2(big).real * (fine / n) ** 2

    exact = torch.fft.fft2(refine(f) * refine(h))[:, rows, cols] / (fine / n) ** 2
    keep = (idx.abs()[:, None] < n / 3) & (idx.abs()[None, :] < n / 3)
    coarse = torch.fft.fft2(f * h)
    assert torch.allclose(coarse[:, keep], exact[:, keep], atol=1e-10 * float(exact.abs().max()))
    # ... and the rfft mask keeps exactly those modes.
    assert torch.equal(g.dealias.bool(), keep[:, : n // 2 + 1])


@pytest.mark.parametrize("length", DOMAINS)
def test_velocity_is_divergence_free_and_its_curl_is_the_vorticity(length):
    g = FourierGrid2D(32, length)
    omega = band_limited(g, 3, seed=4) + 0.7  # a mean that the velocity cannot carry
    wh = g.rfft(omega)
    uh, vh = g.velocity_hat(wh)
    u, v = g.irfft(uh), g.irfft(vh)
    ux, uy = g.grad(g.rfft(u))
    vx, vy = g.grad(g.rfft(v))
    scale = float(omega.abs().max())
    assert float(g.irfft(ux + vy).abs().max()) < 1e-12 * scale
    zero_mean = omega - omega.mean((-2, -1), keepdim=True)
    assert torch.allclose(g.irfft(vx - uy), zero_mean, atol=1e-12 * scale)


@pytest.mark.parametrize("length", DOMAINS)
@pytest.mark.parametrize(
    "s, alpha", [(0.0, 1.0), (1.0, 1.0), (2.0, 0.5), (-1.0, 10**-1.5), (-0.5, 1.0)]
)
def test_sobolev_norm_equals_a_direct_sum_over_the_full_fft(length, s, alpha):
    n = 20
    g = FourierGrid2D(n, length)
    f = torch.randn((3, n, n), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    fh = torch.fft.fft2(f)  # full spectrum, every mode once
    m = torch.fft.fftfreq(n, 1 / n, dtype=torch.float64)
    k2 = (2 * math.pi / length) ** 2 * (m[:, None] ** 2 + m[None, :] ** 2)
    direct = ((alpha + k2) ** s * fh.abs() ** 2).sum((-2, -1)) * length**2 / n**4
    assert torch.allclose(g.sobolev_norm(f, s, alpha), direct.sqrt(), rtol=1e-12)


@pytest.mark.parametrize("length", DOMAINS)
@pytest.mark.parametrize("s, alpha", [(0.0, 1.0), (1.0, 1.0), (-1.0, 10**-1.5), (3.0, 2.0)])
@pytest.mark.parametrize("mode", [(0, 1), (3, -2), (5, 0)])
def test_sobolev_norm_of_one_fourier_mode_in_closed_form(length, s, alpha, mode):
    g = FourierGrid2D(16, length)
    mx, my = mode
    f = torch.cos(2 * math.pi * (mx * g.x + my * g.y) / length)
    k2 = (2 * math.pi / length) ** 2 * (mx**2 + my**2)
    expected = math.sqrt((alpha + k2) ** s * length**2 / 2)  # integral of cos^2 = L^2 / 2
    assert float(g.sobolev_norm(f, s, alpha)) == pytest.approx(expected, rel=1e-12)
    # Leading indices are kept, one norm each.
    assert g.sobolev_norm(torch.stack([f, 2 * f]), s, alpha).shape == (2,)


def test_float32_grid_and_boundary_checks():
    g = FourierGrid2D(16, dtype=torch.float32)
    f = torch.sin(2 * math.pi * g.x)
    assert g.rfft(f).dtype == torch.complex64 and g.irfft(g.rfft(f)).dtype == torch.float32
    assert g.sobolev_norm(f, 1.0).dtype == torch.float32
    with pytest.raises(ValueError, match=r"of shape \(\.\.\., 16, 16\), got \(4, 16\)"):
        g.rfft(torch.zeros(4, 16))
    with pytest.raises(ValueError, match="alpha > 0"):
        g.sobolev_norm(f, -1.0, alpha=0.0)
    with pytest.raises(ValueError, match="n >= 4"):
        FourierGrid2D(2)


# -- Fourier resampling -----------------------------------------------------------------


def _band_limited_on(n: int, coeffs: torch.Tensor, length: float) -> torch.Tensor:
    """Evaluate sum_{|mx|,|my|<=K} c cos(2π(mx x + my y)/L + phase) on an n×n grid."""
    x = torch.arange(n, dtype=torch.float64) * length / n
    X, Y = torch.meshgrid(x, x, indexing="ij")
    out = torch.zeros(n, n, dtype=torch.float64)
    for mx, my, amp, phase in coeffs.tolist():
        out += amp * torch.cos(2 * math.pi * (mx * X + my * Y) / length + phase)
    return out


@pytest.mark.parametrize("length", [1.0, 2 * math.pi])
@pytest.mark.parametrize("n_to", [16, 24, 128])
def test_fourier_resample_reproduces_band_limited_fields(length, n_to):
    from sciml.operators.spectral import fourier_resample

    gen = torch.Generator().manual_seed(7)
    modes = torch.randint(-7, 8, (12, 2), generator=gen).double()
    coeffs = torch.cat([modes, torch.randn(12, 2, generator=gen, dtype=torch.float64)], 1)
    f64 = _band_limited_on(64, coeffs, length)
    expected = _band_limited_on(n_to, coeffs, length)
    got = fourier_resample(f64[None, None], n_to)[0, 0]
    assert torch.allclose(got, expected, rtol=0, atol=1e-11)
    back = fourier_resample(got, 64)
    assert torch.allclose(back, f64, rtol=0, atol=1e-11)


def test_fourier_resample_rejects_bad_shapes():
    from sciml.operators.spectral import fourier_resample

    with pytest.raises(ValueError, match=r"expected fields of shape \(\.\.\., N, N\)"):
        fourier_resample(torch.zeros(4, 8, 6), 4)
    with pytest.raises(ValueError, match="even number"):
        fourier_resample(torch.zeros(8, 8), 5)


@pytest.mark.parametrize("call, message", [
    (lambda: FourierGrid2D(float("nan")), "integer number of points n >= 4, got nan"),
    (lambda: FourierGrid2D(float("inf")), "integer number of points n >= 4, got inf"),
    (lambda: FourierGrid2D(16, length=float("inf")), "positive, finite domain length, got inf"),
    (lambda: FourierGrid2D(16).sobolev_norm(torch.ones(16, 16, dtype=torch.float64), 0.5, alpha=-1.0),
     "expected alpha >= 0, got -1.0"),
    (lambda: fourier_resample(torch.ones(16, 16), 12.5), "even number of points n >= 2, got 12.5"),
])
def test_invalid_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_resampling_to_the_same_size_is_a_copy_and_sizes_may_be_whole_floats():
    """n == N keeps every mode (Nyquist included, as documented); n = 32.0 is n = 32."""
    x = torch.arange(16, dtype=torch.float64) / 16
    f = torch.cos(2 * math.pi * 8 * x)[:, None] + torch.sin(2 * math.pi * 3 * x)[None, :]
    assert torch.equal(fourier_resample(f, 16), f)
    torch.testing.assert_close(fourier_resample(f, 32.0), fourier_resample(f, 32), rtol=0, atol=0)
