"""Spectral-mixture kernels: closed-form derivatives against autograd, Toeplitz gather
against pairwise evaluation, positive semi-definiteness."""

import math

import pytest
import torch

from sciml.solvers.gp import GaussianSpectralMixture, StudentTSpectralMixture

DT = torch.float64
KERNELS = [GaussianSpectralMixture, StudentTSpectralMixture]


def make_kernel(cls, q=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = 3.0 * torch.rand(q, generator=g, dtype=DT)
    rho = 0.5 + 2.0 * torch.rand(q, generator=g, dtype=DT)
    w = 0.1 + torch.rand(q, generator=g, dtype=DT)
    return cls(mu, rho=rho, weight=w)


def reference_k(cls, kernel, x, xp):
    """k(x, x') written out independently, differentiable in x and x' by autograd."""
    w, rho, mu = kernel.weight.detach(), kernel.rho.detach(), kernel.mu.detach()
    d = (x - xp)[..., None]
    if cls is GaussianSpectralMixture:
        env = torch.exp(-((rho * d) ** 2))
    else:
        r = math.sqrt(5.0) * rho * torch.abs(d)
        env = (1 + r + r**2 / 3) * torch.exp(-r)
    return (w * env * torch.cos(2 * math.pi * mu * d)).sum(-1)


@pytest.mark.parametrize("cls", KERNELS)
def test_derivatives_equal_autograd_in_first_argument(cls):
    kernel = make_kernel(cls)
    g = torch.Generator().manual_seed(1)
    x = (4 * torch.rand(7, generator=g, dtype=DT) - 2).requires_grad_(True)
    xp = 4 * torch.rand(6, generator=g, dtype=DT) - 2
    if cls is GaussianSpectralMixture:  # smooth at d = 0: include coincident points
        xp = torch.cat([xp, x.detach()[:2]])
    X, XP = torch.meshgrid(x, xp, indexing="ij")
    k = reference_k(cls, kernel, X, XP)
    # k[i, j] depends on x[i] only: the gradient of a column sum is the column of derivatives
    d1 = torch.stack([torch.autograd.grad(k[:, j].sum(), x, create_graph=True)[0] for j in range(k.shape[1])], 1)
    d2 = torch.stack([torch.autograd.grad(d1[:, j].sum(), x, retain_graph=True)[0] for j in range(k.shape[1])], 1)
    with torch.no_grad():
        k0, k1, k2 = (kernel.gram(x.detach(), xp, order=o) for o in range(3))
    torch.testing.assert_close(k0, k.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(k1, d1.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(k2, d2.detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", KERNELS)
def test_first_derivative_is_in_the_first_argument(cls):
    """order=1 is d/dx k(x, x'), which is minus d/dx' k(x, x')."""
    kernel = make_kernel(cls)
    x = torch.tensor([0.3], dtype=DT)
    xp = torch.tensor([-0.4], dtype=DT, requires_grad=True)
    d_xp = torch.autograd.grad(reference_k(cls, kernel, x, xp).sum(), xp)[0]
    with torch.no_grad():
        k1 = kernel.gram(x, xp.detach(), order=1)
    torch.testing.assert_close(k1.reshape(1), -d_xp, rtol=1e-10, atol=1e-12)


def test_matern_derivatives_continuous_at_zero():
    kernel = make_kernel(StudentTSpectralMixture)
    d = torch.tensor([0.0, 1e-9, -1e-9], dtype=DT)
    with torch.no_grad():
        k0, k1, k2 = kernel(d, order=2)
    assert torch.allclose(k0, k0[0].expand(3), rtol=1e-8)
    assert torch.allclose(k1, torch.zeros(3, dtype=DT), atol=1e-6)
    assert torch.allclose(k2, k2[0].expand(3), rtol=1e-7)
    assert float(k2[0]) < 0  # k''(0) = -variance of u'


@pytest.mark.parametrize("cls", KERNELS)
def test_toeplitz_gather_equals_pairwise(cls):
    kernel = make_kernel(cls, q=7, seed=3)
    n, h, x0 = 23, 0.137, -0.5
    x = x0 + h * torch.arange(n, dtype=DT)
    toeplitz = kernel.toeplitz_grams(n, h, order=2)
    for order in range(3):
        torch.testing.assert_close(toeplitz[order], kernel.gram(x, x, order=order), rtol=1e-12, atol=1e-12)
    k0, k1, k2 = (t.detach() for t in toeplitz)
    torch.testing.assert_close(k0, k0.mT)
    torch.testing.assert_close(k1, -k1.mT)
    torch.testing.assert_close(k2, k2.mT)


@pytest.mark.parametrize("cls", KERNELS)
def test_gram_is_positive_semidefinite(cls):
    kernel = make_kernel(cls, q=6, seed=4)
    x = torch.linspace(0, 3, 40, dtype=DT)
    with torch.no_grad():
        k = kernel.gram(x)
        ev = torch.linalg.eigvalsh(k)
        assert float(ev.min()) > -1e-10 * float(ev.max())
        assert float(k[0, 0]) == pytest.approx(float(kernel.weight.sum()), rel=1e-12)


@pytest.mark.parametrize("cls", KERNELS)
def test_toeplitz_gradients_equal_pairwise_gradients(cls):
    """The gather's backward (a scatter-add over lags) gives the parameter gradients of the direct evaluation."""
    kernel = make_kernel(cls, q=4, seed=5)
    n, h = 9, 0.21
    x = h * torch.arange(n, dtype=DT)
    weights = torch.randn(3, n, n, generator=torch.Generator().manual_seed(6), dtype=DT)

    def grads(mats):
        loss = sum((w * m).sum() for w, m in zip(weights, mats))
        return torch.autograd.grad(loss, list(kernel.parameters()))

    g_toeplitz = grads(kernel.toeplitz_grams(n, h, order=2))
    g_pairwise = grads([kernel.gram(x, x, order=o) for o in range(3)])
    for a, b in zip(g_toeplitz, g_pairwise):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_initialised_and_bad_arguments():
    k = GaussianSpectralMixture.initialised(5, 4.0)
    assert torch.allclose(k.mu.detach(), torch.linspace(0, 4, 5, dtype=DT))
    assert float(k.weight.detach().sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        GaussianSpectralMixture(torch.zeros(2, 2, dtype=DT))
    with pytest.raises(ValueError, match="positive"):
        GaussianSpectralMixture(torch.zeros(2, dtype=DT), rho=-1.0)
    with pytest.raises(ValueError, match="order"):
        k(torch.zeros(3, dtype=DT), order=3)
