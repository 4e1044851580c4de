"""Gaunt tensor products: exactness against a slow reference, symmetry, gradients, dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from e3nn import o3

from sciml.operators.gaunt import (
    DENSE_MAX_DEGREE,
    FourierGauntProduct,
    GauntTensorProduct,
    SphereGridGauntProduct,
    WeightedGauntTensorProduct,
    gaunt_coefficients,
    gaunt_product_reference,
    legendre_fourier_coefficients,
    legendre_projection_coefficients,
    normalized_legendre,
    wigner_3j_zero_m,
)
from sciml.operators.gaunt.sphere_grid import DENSE_MAX_DEGREE_ONE_THREAD, dense_max_degree
from sciml.operators.gaunt.fourier import next_smooth_size

TOL = 1e-10


@pytest.fixture(autouse=True)
def float64_single_thread():
    """float64 by default; one thread (the tensors are tiny, the 2 cores are shared)."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def n_coef(lmax: int) -> int:
    return (lmax + 1) ** 2


# Every exact implementation of the two-input product, by name.
PATHS = {
    "fourier": lambda l1, l2, lo: FourierGauntProduct((l1, l2), lo),
    "grid-separable": lambda l1, l2, lo: SphereGridGauntProduct((l1, l2), lo, transform="separable"),
    "grid-dense": lambda l1, l2, lo: SphereGridGauntProduct((l1, l2), lo, transform="dense"),
}


def sphere_quadrature(degree: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (n, 3) and weights (n,) integrating polynomials of ``degree`` exactly.

    Polar axis z here (e3nn's is y), so the check does not share the fast paths' frame.
    """
    z, w = np.polynomial.legendre.leggauss(degree // 2 + 1)
    phi = 2 * np.pi * np.arange(degree + 1) / (degree + 1)
    s = np.sqrt(1 - z * z)
    pts = np.stack(
        [np.outer(s, np.cos(phi)), np.outer(s, np.sin(phi)), np.outer(z, np.ones_like(phi))], -1
    ).reshape(-1, 3)
    weights = np.outer(w, np.full(phi.shape, 2 * np.pi / (degree + 1))).reshape(-1)
    return torch.from_numpy(pts), torch.from_numpy(weights)


# --- the identity and the building blocks, against independent references --------------


def test_gaunt_identity_matches_quadrature_of_e3nn_harmonics():
    lmax = 4
    pts, w = sphere_quadrature(3 * lmax)
    sh = o3.spherical_harmonics(list(range(lmax + 1)), pts, normalize=True, normalization="integral")
    for l1 in range(lmax + 1):
        for l2 in range(lmax + 1):
            for l3 in range(lmax + 1):
                y1, y2, y3 = (sh[:, l * l : (l + 1) ** 2] for l in (l1, l2, l3))
                quad = torch.einsum("p,pi,pj,pk->ijk", w, y1, y2, y3)
                got = gaunt_coefficients(l1, l2, l3)
                assert got.shape == quad.shape
                torch.testing.assert_close(got, quad, atol=1e-13, rtol=0)


def test_wigner_3j_zero_m_matches_sympy():
    from sympy.physics.wigner import wigner_3j

    for l1, l2, l3 in [(1, 1, 2), (2, 2, 2), (3, 5, 4), (6, 4, 8), (10, 7, 5), (1, 1, 1), (2, 3, 7)]:
        assert wigner_3j_zero_m(l1, l2, l3) == pytest.approx(float(wigner_3j(l1, l2, l3, 0, 0, 0)), abs=1e-15)


def test_polar_azimuthal_factorisation_matches_e3nn_harmonics():
    lmax = 12  # e3nn's closed forms stop here; the recursion does not
    rng = np.random.default_rng(0)
    theta, phi = rng.uniform(0, np.pi, 40), rng.uniform(0, 2 * np.pi, 40)
    xyz = np.stack([np.sin(theta) * np.sin(phi), np.cos(theta), np.sin(theta) * np.cos(phi)], -1)
    sh = o3.spherical_harmonics(list(range(lmax + 1)), torch.from_numpy(xyz), True, normalization="integral")
    p = normalized_legendre(lmax, np.cos(theta), np.sin(theta))
    ours = np.zeros_like(sh.numpy())
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            az = 1.0 if m == 0 else math.sqrt(2) * (np.cos(m * phi) if m > 0 else np.sin(-m * phi))
            ours[:, l * l + l + m] = p[abs(m), l] * az
    np.testing.assert_allclose(ours, sh.numpy(), atol=1e-12, rtol=0)


def test_fourier_coefficients_and_projection_are_exact_at_high_degree():
    lmax = 30
    c = legendre_fourier_coefficients(lmax)  # (m, l, u)
    theta = np.random.default_rng(1).uniform(0, 2 * np.pi, 25)  # also the continuation past pi
    p = normalized_legendre(lmax, np.cos(theta), np.sin(theta))
    series = np.einsum("mlu,tu->mlt", c, np.exp(1j * np.outer(theta, np.arange(-lmax, lmax + 1))))
    np.testing.assert_allclose(series.real, p, atol=1e-12)
    np.testing.assert_allclose(series.imag, 0, atol=1e-12)
    # 2 pi * int P_l^m P_l'^m sin = delta_ll' (l, l' >= m): the projection inverts the expansion
    q = legendre_projection_coefficients(lmax, lmax)
    gram = 2 * np.pi * np.einsum("mlu,mku->mlk", q, c).real
    expected = np.stack([np.diag((np.arange(lmax + 1) >= m).astype(float)) for m in range(lmax + 1)])
    np.testing.assert_allclose(gram, expected, atol=1e-12)


def test_fft_sizes_are_5_smooth():
    assert [next_smooth_size(n) for n in (1, 7, 11, 13, 31, 49, 97)] == [1, 8, 12, 15, 32, 50, 100]
    tp = FourierGauntProduct((7, 6), 9)
    assert (tp.n_theta, tp.n_phi) == (next_smooth_size(27), next_smooth_size(23))


# --- exactness of the fast paths ----------------------------------------------------------

CASES = [
    (2, 2, 4),  # Lout = L1 + L2
    (3, 1, 2),  # Lout < L1 + L2
    (1, 4, 5),  # L1 < L2, Lout = L1 + L2
    (2, 1, 5),  # Lout > L1 + L2: the top degrees are zero
    (5, 3, 8),
    (8, 4, 6),
    (8, 8, 4),
    (0, 3, 3),
    (2, 1, 2),  # odd L1 + L2 + Lout: an even number of azimuths (phi = pi is its own mirror)
    (4, 3, 6),
]


@pytest.mark.parametrize("l1,l2,lo", CASES)
def test_every_path_equals_reference(l1, l2, lo):
    gen = torch.Generator().manual_seed(l1 * 100 + l2 * 10 + lo)
    x = torch.randn(3, n_coef(l1), generator=gen)
    y = torch.randn(3, n_coef(l2), generator=gen)
    expected = gaunt_product_reference(x, y, l1, l2, lo)
    for name, make in PATHS.items():
        torch.testing.assert_close(make(l1, l2, lo)(x, y), expected, atol=TOL, rtol=0, msg=name)


@pytest.mark.parametrize("l1,l2,lo", [(13, 11, 16), (14, 14, 14)])
def test_every_path_equals_reference_beyond_e3nns_degree_12(l1, l2, lo):
    """Two inputs above e3nn's harmonics (l <= 12): the coefficients come from our own Wigner-3j."""
    gen = torch.Generator().manual_seed(l1 + l2 + lo)
    x, y = torch.randn(2, n_coef(l1), generator=gen), torch.randn(2, n_coef(l2), generator=gen)
    expected = gaunt_product_reference(x, y, l1, l2, lo)
    for name, make in PATHS.items():
        torch.testing.assert_close(make(l1, l2, lo)(x, y), expected, atol=TOL, rtol=0, msg=name)


def test_fourier_and_grid_paths_agree_at_degree_12():
    x, y = torch.randn(4, n_coef(12)), torch.randn(4, n_coef(12))
    z_grid = SphereGridGauntProduct((12, 12), 12)(x, y)
    z_fourier = FourierGauntProduct((12, 12), 12)(x, y)
    torch.testing.assert_close(z_fourier, z_grid, atol=TOL, rtol=0)


@pytest.mark.parametrize("path", PATHS)
def test_single_input_is_projection(path):
    # nu = 1: the product of one function is itself, truncated at Lout
    x = torch.randn(2, n_coef(16))
    make = {"fourier": FourierGauntProduct, "grid-separable": SphereGridGauntProduct}.get(
        path, lambda d, lo: SphereGridGauntProduct(d, lo, transform="dense")
    )
    torch.testing.assert_close(make((16,), 16)(x), x, atol=TOL, rtol=0)
    torch.testing.assert_close(make((16,), 9)(x), x[:, : n_coef(9)], atol=TOL, rtol=0)


@pytest.mark.parametrize("path", PATHS)
def test_odd_paths_vanish(path):
    for l1, l2 in [(1, 2), (2, 3), (3, 3)]:
        x = torch.zeros(2, n_coef(l1))
        y = torch.zeros(2, n_coef(l2))
        x[:, l1 * l1 :] = torch.randn(2, 2 * l1 + 1)
        y[:, l2 * l2 :] = torch.randn(2, 2 * l2 + 1)
        z = PATHS[path](l1, l2, l1 + l2)(x, y)
        for l3 in range(l1 + l2 + 1):
            block = z[:, l3 * l3 : (l3 + 1) ** 2]
            if (l1 + l2 + l3) % 2 or l3 < abs(l1 - l2):
                assert block.abs().max() < 1e-12, (l1, l2, l3)
            else:
                assert block.abs().max() > 1e-3, (l1, l2, l3)


@pytest.mark.parametrize("method", ["grid", "fourier"])
def test_three_fold_product_equals_nested_reference(method):
    cls = SphereGridGauntProduct if method == "grid" else FourierGauntProduct
    degrees, lo = (2, 3, 1), 4
    x, y, w = (torch.randn(2, n_coef(l)) for l in degrees)
    # the intermediate product keeps its full degree 5: truncating it would change the result
    xy = gaunt_product_reference(x, y, 2, 3, 5)
    expected = gaunt_product_reference(xy, w, 5, 1, lo)
    torch.testing.assert_close(cls(degrees, lo)(x, y, w), expected, atol=TOL, rtol=0)


# --- symmetry --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wigner_blocks():
    """Wigner-D blocks of one random rotation for l <= 12 (e3nn), and of the inversion."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds D in the default dtype
    torch.manual_seed(12)
    rot = o3.rand_matrix()
    blocks = [o3.wigner_D(l, *o3.matrix_to_angles(rot)) for l in range(13)]
    torch.set_default_dtype(old)
    inversion = [(-1.0) ** l * torch.eye(2 * l + 1, dtype=torch.float64) for l in range(13)]
    return blocks, inversion


@pytest.mark.parametrize("lmax,method", [(12, "auto"), (6, "auto"), (5, "fourier"), (12, "fourier"), (8, "dense")])
def test_equivariance_under_rotation_and_inversion(lmax, method, wigner_blocks):
    torch.manual_seed(lmax)
    if method == "dense":  # the transform auto picks with several threads (tests run with one)
        tp = SphereGridGauntProduct((lmax, lmax - 1), lmax, transform="dense")
    else:
        tp = GauntTensorProduct(lmax, lmax - 1, lmax, method=method)
    x, y = torch.randn(3, n_coef(lmax)), torch.randn(3, n_coef(lmax - 1))
    for blocks in wigner_blocks:  # D(R) for a random rotation; then Y_lm(-r) = (-1)^l Y_lm(r)
        d1, d2 = torch.block_diag(*blocks[: lmax + 1]), torch.block_diag(*blocks[:lmax])
        torch.testing.assert_close(tp(x @ d1.T, y @ d2.T), tp(x, y) @ d1.T, atol=TOL, rtol=0)


# --- autograd, dtypes, devices, shapes -----------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_gradcheck(path):
    tp = PATHS[path](2, 1, 2)
    x = torch.randn(n_coef(2), requires_grad=True)
    y = torch.randn(n_coef(1), requires_grad=True)
    assert torch.autograd.gradcheck(tp, (x, y))


@pytest.mark.parametrize("transform", ["separable", "dense"])
def test_second_derivatives_of_the_grid_path(transform):
    """The separable transform's coefficient split and merge have hand-written adjoints
    (gathers, not autograd's scatter-add); the dense one splits the coefficients by parity
    (no odd part at degree 0): first and second derivatives against finite differences,
    batched, with output degree above and below the inputs', an even and an odd number of
    azimuths, and a degree-0 input."""
    for degrees, lmax_out in (((3, 2), 4), ((2, 3), 1), ((0, 1, 2), 2)):
        tp = SphereGridGauntProduct(degrees, lmax_out, transform=transform)
        xs = tuple(torch.randn(2, n_coef(l), requires_grad=True) for l in degrees)
        assert torch.autograd.gradcheck(tp, xs)
        assert torch.autograd.gradgradcheck(tp, xs)


def test_gradcheck_three_fold_fourier():
    tp = FourierGauntProduct((1, 2, 1), 2)
    xs = tuple(torch.randn(n_coef(l), requires_grad=True) for l in (1, 2, 1))
    assert torch.autograd.gradcheck(tp, xs)


@pytest.mark.parametrize("method", ["grid", "fourier"])
def test_float32_agrees_with_float64(method):
    tp64 = GauntTensorProduct(6, 5, 8, method=method)
    x, y = torch.randn(16, n_coef(6)), torch.randn(16, n_coef(5))
    z64 = tp64(x, y)
    tp32 = GauntTensorProduct(6, 5, 8, method=method).to(torch.float32)
    z32 = tp32(x.float(), y.float())
    assert z32.dtype == torch.float32
    assert ((z32.double() - z64).abs().max() / z64.abs().max()) < 1e-5
    torch.set_default_dtype(torch.float32)  # buffers follow the default dtype at construction
    tp32_default = GauntTensorProduct(2, 2, 2, method=method)
    assert tp32_default(torch.randn(n_coef(2)), torch.randn(n_coef(2))).dtype == torch.float32


@pytest.mark.parametrize("path", PATHS)
def test_broadcasting_over_leading_dimensions(path):
    tp = PATHS[path](2, 3, 4)
    x, y = torch.randn(4, 1, n_coef(2)), torch.randn(5, n_coef(3))
    z = tp(x, y)
    assert z.shape == (4, 5, n_coef(4))
    torch.testing.assert_close(z, gaunt_product_reference(x, y, 2, 3, 4), atol=TOL, rtol=0)
    assert tp(x[0, 0], y[0]).shape == (n_coef(4),)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", ["grid", "fourier"])
def test_cuda_matches_cpu(method):
    tp = GauntTensorProduct(4, 3, 5, method=method)
    x, y = torch.randn(8, n_coef(4)), torch.randn(8, n_coef(3))
    z = tp.to("cuda")(x.cuda(), y.cuda())
    torch.testing.assert_close(z.cpu(), gaunt_product_reference(x, y, 4, 3, 5), atol=TOL, rtol=0)


def test_bad_inputs_raise_with_expected_and_got():
    tp = GauntTensorProduct(2, 2, 2)
    with pytest.raises(ValueError, match=r"expected input 1 of shape \(\.\.\., 9\).*got \(3, 16\)"):
        tp(torch.randn(3, 9), torch.randn(3, 16))
    with pytest.raises(ValueError, match=r"expected input 0 of dtype torch.float64.*got torch.float32"):
        tp(torch.randn(3, 9).float(), torch.randn(3, 9))
    with pytest.raises(ValueError, match=r"expected 3 inputs .* got 2"):
        FourierGauntProduct((1, 1, 1), 2)(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match=r"expected method in .* got 'fft'"):
        GauntTensorProduct(2, 2, 2, method="fft")


@pytest.mark.parametrize("threads, limit", [(1, DENSE_MAX_DEGREE_ONE_THREAD), (2, DENSE_MAX_DEGREE)])
def test_auto_picks_the_measured_fastest_transform_for_the_thread_count(threads, limit):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert dense_max_degree() == limit
        assert GauntTensorProduct(3, 3, 3).method == "grid"
        assert GauntTensorProduct(limit, 2, 4).path.transform == "dense"
        assert GauntTensorProduct(limit + 1, 2, 4).path.transform == "separable"
    finally:
        torch.set_num_threads(before)


# --- the learnable parameterisation ---------------------------------------------------------------


def test_weighted_product_starts_as_plain_product_and_scales_degree_blocks():
    x, y = torch.randn(5, 3, n_coef(3)), torch.randn(5, 3, n_coef(2))
    tp = WeightedGauntTensorProduct(3, 2, 4, channels=3)
    torch.testing.assert_close(tp(x, y), gaunt_product_reference(x, y, 3, 2, 4), atol=TOL, rtol=0)
    with torch.no_grad():
        tp.weight1.normal_()
        tp.weight2.normal_()
    deg1 = torch.repeat_interleave(torch.arange(4), 2 * torch.arange(4) + 1)
    deg2 = torch.repeat_interleave(torch.arange(3), 2 * torch.arange(3) + 1)
    xw, yw = x * tp.weight1[:, deg1], y * tp.weight2[:, deg2]
    z = tp(x, y)
    torch.testing.assert_close(z, gaunt_product_reference(xw, yw, 3, 2, 4), atol=TOL, rtol=0)
    z.square().sum().backward()
    assert tp.weight1.grad.shape == (3, 4) and tp.weight1.grad.abs().min() > 0
    expected_shape = r"expected x of shape \(\.\.\., 3 or 1, \(L\+1\)\*\*2\), got \(5, 4, 16\)"
    with pytest.raises(ValueError, match=expected_shape):
        tp(torch.randn(5, 4, 16), torch.randn(5, 4, 9))


@pytest.mark.parametrize("method,transform", [("fourier", None), ("grid", "separable"), ("grid", "dense")])
def test_an_empty_batch_gives_an_empty_product_with_gradients(method, transform):
    torch.set_num_threads(1 if transform == "separable" else 2)
    tp = GauntTensorProduct(8, 8, 8, method=method)
    if transform is not None:
        assert tp.path.transform == transform
    x = torch.randn(0, 3, 81, requires_grad=True)
    z = tp(x, torch.randn(1, 81))
    assert z.shape == (0, 3, 81)
    z.sum().backward()
    assert x.grad.shape == x.shape


def test_weighted_product_shares_a_one_channel_input_across_channels():
    tp = WeightedGauntTensorProduct(2, 1, 3, channels=4)
    with torch.no_grad():
        tp.weight1.copy_(torch.rand(4, 3))
        tp.weight2.copy_(torch.rand(4, 2))
    x, y = torch.randn(5, 4, 9), torch.randn(5, 1, 4)
    torch.testing.assert_close(tp(x, y), tp(x, y.expand(5, 4, 4)), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="4 or 1"):
        tp(x, torch.randn(5, 2, 4))


@pytest.mark.parametrize("degrees", [(2.5, 2, 2), (2, -1, 2), (True, 1, 1)])
def test_degrees_must_be_non_negative_integers(degrees):
    with pytest.raises(ValueError, match="an integer >= 0"):
        GauntTensorProduct(*degrees)


@pytest.mark.parametrize("degree", [float("nan"), float("inf"), None, "2", -3])
def test_degrees_that_are_not_numbers_are_refused_by_name(degree):
    with pytest.raises(ValueError, match=r"expected lmax_out to be an integer >= 0"):
        GauntTensorProduct(2, 2, degree)
    with pytest.raises(ValueError, match=r"expected every degree to be an integer >= 0"):
        SphereGridGauntProduct((2, degree), 2)


@pytest.mark.parametrize("channels", [0, -3, 2.5, "4", True])
def test_weighted_product_refuses_channel_counts_that_are_not_positive_integers(channels):
    with pytest.raises(ValueError, match=r"expected channels to be an integer >= 1"):
        WeightedGauntTensorProduct(2, 1, 2, channels=channels)


@pytest.mark.parametrize("make", [
    lambda: FourierGauntProduct((5, 4), 7),
    lambda: SphereGridGauntProduct((5, 4), 7, transform="separable"),
    lambda: SphereGridGauntProduct((5, 4), 7, transform="dense"),
    lambda: WeightedGauntTensorProduct(5, 4, 7, channels=2),
], ids=["fourier", "grid-separable", "grid-dense", "weighted"])
def test_a_module_built_in_float32_and_cast_to_float64_has_float64_exact_tables(make):
    """The tables are recomputed from their float64 originals by ``.double()``, not widened from
    float32: the cast module equals the reference to 1e-10, as one built in float64 does (a widened
    float32 table is off by ~1e-7)."""
    torch.set_default_dtype(torch.float32)
    module = make()
    torch.set_default_dtype(torch.float64)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 2, n_coef(5), generator=gen), torch.randn(4, 2, n_coef(4), generator=gen)
    expected = gaunt_product_reference(x, y, 5, 4, 7)
    torch.testing.assert_close(module.double()(x, y), expected, atol=TOL, rtol=0)
    z32 = module.float()(x.float(), y.float())  # and back: float32 tables rounded from the originals
    assert z32.dtype == torch.float32
    assert (z32.double() - expected).abs().max() < 1e-5 * expected.abs().max()
    with pytest.raises(ValueError, match="dtype torch.float32"):
        module(x, y.float())
    module.share_memory()  # a move or a share keeps the tables (only a cast rebuilds them)
    assert all(b.is_shared() for b in module.buffers())
