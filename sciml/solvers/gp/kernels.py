r"""One-dimensional spectral-mixture kernels with closed-form derivatives.

Follows Fang, Cooley, Long, Li, Kirby, Zhe, "Solving High Frequency and Multi-Scale
PDEs with Gaussian Processes" (GP-HM), ICLR 2024. A stationary kernel on the real
line is a mixture of :math:`Q` components, each an envelope times a cosine,

.. math::

    k(d) = \sum_{q=1}^{Q} w_q \, m(\rho_q d) \, \cos(2\pi \mu_q d), \qquad d = x - x',

* :class:`GaussianSpectralMixture`: :math:`m(r) = \exp(-r^2)`, a Gaussian-mixture
  spectral density;
* :class:`StudentTSpectralMixture`: :math:`m(r) = (1 + \sqrt5 r + \tfrac53 r^2)
  e^{-\sqrt5 |r|}`, the Matérn-5/2 envelope, whose spectral density is a mixture of
  Student-t densities.

Units: :math:`\mu_q` is in cycles per unit length (``sin(100 x)`` has
:math:`\mu = 100/2\pi \approx 15.915`), :math:`\rho_q` in inverse length.

The PDE solver needs the GP mean and its derivatives,
:math:`\partial^n_x \mathbb E[u(x)] = \partial^n_x k(x, X) K^{-1} U`, hence the
derivatives of :math:`k(x, x')` in its *first* argument, which for a stationary
kernel are :math:`k^{(n)}(d)`: ``order=1`` gives :math:`\partial_x k(x,x') = k'(d)`
(odd in d) and ``order=2`` gives :math:`\partial^2_x k(x,x') = k''(d)` (even in d).

Parameters are stored unconstrained: ``log_weight`` (:math:`\log w_q`),
``log_rho`` (:math:`\log \rho_q`) and ``mu``. Optimising the log-weights with no
explicit prior term is what the paper calls the Jeffreys prior on the weights:
:math:`p(w) \propto 1/w` is flat in :math:`\log w`, and unneeded components shrink
without a pruning step.

On a uniform grid :math:`x_i = x_0 + i h` the Gram matrices are Toeplitz,
:math:`K_{ij} = k((i - j) h)`: :meth:`SpectralMixture1D.toeplitz_grams` evaluates
the kernel on the :math:`2N - 1` lags once and gathers the :math:`N \times N`
matrices, :math:`O(NQ + N^2)` work instead of :math:`O(N^2 Q)`.
"""

from __future__ import annotations

import abc
import math
from typing import final

import torch
from torch import Tensor, nn

__all__ = ["SpectralMixture1D", "GaussianSpectralMixture", "StudentTSpectralMixture"]

_SQRT5 = math.sqrt(5.0)


class SpectralMixture1D(nn.Module, abc.ABC):
    r"""Abstract 1D spectral-mixture kernel :math:`\sum_q w_q m(\rho_q d)\cos(2\pi\mu_q d)`.

    A subclass supplies only the envelope :math:`m` and its first two derivatives
    (:meth:`_envelope`); the cosine factor, the product rule, the Gram matrices and
    the Toeplitz gather live here.

    Parameters
    ----------
    mu : Tensor, shape ``(Q,)``
        Initial frequencies, cycles per unit length.
    rho : Tensor or float
        Initial envelope scales :math:`\rho_q > 0` (inverse length), shape ``(Q,)``
        or a scalar broadcast to all components.
    weight : Tensor or float
        Initial weights :math:`w_q > 0`, shape ``(Q,)`` or scalar.

    The dtype and device of the parameters are those of ``mu``.

    Examples
    --------
    >>> import torch
    >>> k = GaussianSpectralMixture(torch.tensor([1.0, 2.0], dtype=torch.float64), rho=0.5, weight=0.5)
    >>> K, K1, K2 = k.toeplitz_grams(5, spacing=0.1)
    >>> K.shape, bool(torch.allclose(K, k.gram(0.1 * torch.arange(5.0, dtype=torch.float64))))
    (torch.Size([5, 5]), True)
    >>> float(k(torch.zeros((), dtype=torch.float64))[0].detach())  # k(0) = sum of weights
    1.0
    """

    def __init__(self, mu: Tensor, rho: Tensor | float = 1.0, weight: Tensor | float = 1.0):
        super().__init__()
        mu = torch.as_tensor(mu)
        if mu.ndim != 1 or mu.numel() == 0:
            raise ValueError(f"expected mu of shape (Q,) with Q >= 1, got {tuple(mu.shape)}")
        if not mu.is_floating_point():
            raise ValueError(f"expected a floating-point mu, got {mu.dtype}")
        rho = torch.as_tensor(rho, dtype=mu.dtype, device=mu.device).expand_as(mu)
        weight = torch.as_tensor(weight, dtype=mu.dtype, device=mu.device).expand_as(mu)
        if not bool((rho > 0).all()) or not bool((weight > 0).all()):
            raise ValueError("expected positive rho and weight")
        self.mu = nn.Parameter(mu.clone())
        self.log_rho = nn.Parameter(rho.log().clone())
        self.log_weight = nn.Parameter(weight.log().clone())

    @classmethod
    def initialised(
        cls,
        n_components: int,
        max_frequency: float,
        *,
        rho: float | None = None,
        total_weight: float = 1.0,
        peaks: Tensor | None = None,
        peak_rho: float | None = None,
        peak_share: float | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> "SpectralMixture1D":
        r"""A kernel with frequencies spread evenly over ``[0, max_frequency]``.

        Components get equal weights summing to ``total_weight``; the default
        ``rho`` makes the spectral width of a component comparable to the spacing
        :math:`\Delta\mu` of the frequencies, :math:`\rho = \pi \Delta\mu`, so that
        the initial spectrum covers the band without holes.

        ``peaks`` (frequencies, e.g. from :func:`~sciml.solvers.gp.spectrum.spectral_peaks`)
        take the first ``len(peaks)`` components, each with scale ``peak_rho``; the
        other ``n_components - len(peaks)`` are spread as above. ``peak_share``: the
        fraction of ``total_weight`` the peaks share equally, the spread components
        sharing the rest (default, and without peaks: equal weights for all).
        """
        if n_components < 1:
            raise ValueError(f"n_components must be positive (got {n_components})")
        if not max_frequency > 0:
            raise ValueError(f"max_frequency must be positive (got {max_frequency})")
        peaks = torch.zeros(0, dtype=dtype, device=device) if peaks is None else torch.as_tensor(
            peaks, dtype=dtype, device=device).flatten()
        n_peaks = peaks.numel()
        if n_peaks >= n_components:
            raise ValueError(f"expected fewer peaks than components (got {n_peaks} for {n_components})")
        if n_peaks and (peak_rho is None or not peak_rho > 0):
            raise ValueError(f"peaks need a positive peak_rho (got {peak_rho})")
        if peak_share is not None and not 0.0 < peak_share < 1.0:
            raise ValueError(f"peak_share must be in (0, 1) (got {peak_share})")
        n_spread = n_components - n_peaks
        mu = torch.linspace(0.0, max_frequency, n_spread, dtype=dtype, device=device)
        if rho is None:
            rho = math.pi * max_frequency / max(n_spread - 1, 1)
        rhos = torch.full((n_spread,), float(rho), dtype=dtype, device=device)
        weights = torch.full((n_components,), total_weight / n_components, dtype=dtype, device=device)
        if n_peaks:
            mu = torch.cat([peaks, mu])
            rhos = torch.cat([torch.full((n_peaks,), float(peak_rho), dtype=dtype, device=device), rhos])
            if peak_share is not None:
                weights[:n_peaks] = total_weight * peak_share / n_peaks
                weights[n_peaks:] = total_weight * (1.0 - peak_share) / n_spread
        return cls(mu, rho=rhos, weight=weights)

    @property
    def n_components(self) -> int:
        return self.mu.numel()

    @property
    def weight(self) -> Tensor:
        """:math:`w_q`, shape ``(Q,)``."""
        return self.log_weight.exp()

    @property
    def rho(self) -> Tensor:
        r""":math:`\rho_q`, shape ``(Q,)``."""
        return self.log_rho.exp()

    @abc.abstractmethod
    def _envelope(self, d: Tensor, rho: Tensor, order: int) -> list[Tensor]:
        r"""Envelope :math:`m(\rho d)` and its d-derivatives up to ``order`` (≤ 2).

        ``d`` has shape ``(..., 1)``, ``rho`` shape ``(Q,)``; every returned tensor
        has shape ``(..., Q)``.
        """

    def forward(self, d: Tensor, order: int = 0) -> list[Tensor]:
        r"""Kernel and derivatives at lags ``d``.

        Parameters
        ----------
        d : Tensor, any shape ``S``
            Lags :math:`d = x - x'`.
        order : int in {0, 1, 2}
            Highest derivative returned.

        Returns
        -------
        list of ``order + 1`` tensors of shape ``S``
            :math:`[k(d), k'(d), k''(d)]` up to ``order``; :math:`k^{(n)}(d) =
            \partial^n_x k(x, x')`.
        """
        if order not in (0, 1, 2):
            raise ValueError(f"order must be 0, 1 or 2 (got {order})")
        d = d.unsqueeze(-1)
        omega = 2.0 * math.pi * self.mu
        phase = omega * d
        cos = torch.cos(phase)
        env = self._envelope(d, self.rho, order)
        w = self.weight
        out = [(env[0] * cos) @ w]
        if order >= 1:
            sin = torch.sin(phase)
            # (m c)' = m' c - omega m s
            out.append((env[1] * cos - omega * env[0] * sin) @ w)
            if order >= 2:
                # (m c)'' = m'' c - 2 omega m' s - omega^2 m c
                out.append((env[2] * cos - 2.0 * omega * env[1] * sin - omega**2 * env[0] * cos) @ w)
        return out

    def gram(self, x1: Tensor, x2: Tensor | None = None, order: int = 0) -> Tensor:
        r"""Pairwise matrix :math:`[\partial^n_x k(x, x')]_{ij}` at ``x = x1[i]``, ``x' = x2[j]``.

        ``x1`` has shape ``(N,)``, ``x2`` shape ``(M,)`` (default ``x1``); returns ``(N, M)``.
        This is the direct :math:`O(NMQ)` evaluation, valid on any points.
        """
        x2 = x1 if x2 is None else x2
        return self(x1[:, None] - x2[None, :], order=order)[order]

    def toeplitz_grams(self, n: int, spacing: float, order: int = 2) -> list[Tensor]:
        r"""Gram matrices on the uniform grid :math:`x_i = x_0 + i h`, ``i < n``.

        Evaluates :math:`k^{(m)}` at the :math:`2n - 1` lags :math:`(l - n + 1) h`
        and gathers :math:`K^{(m)}_{ij} = k^{(m)}((i - j) h)`.

        Returns
        -------
        list of ``order + 1`` tensors of shape ``(n, n)``: :math:`[K, K', K'']` up to ``order``.
        """
        mu = self.mu
        lags = (torch.arange(2 * n - 1, dtype=mu.dtype, device=mu.device) - (n - 1)) * spacing
        values = self(lags, order=order)
        idx = torch.arange(n, device=mu.device)
        index = idx[:, None] - idx[None, :] + (n - 1)
        return [v[index] for v in values]

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}"


@final
class GaussianSpectralMixture(SpectralMixture1D):
    r"""Gaussian envelope :math:`m(\rho d) = e^{-\rho^2 d^2}`: a Gaussian-mixture spectrum.

    Derivatives: :math:`m' = -2\rho^2 d\, m`, :math:`m'' = (4\rho^4 d^2 - 2\rho^2) m`.
    """

    def _envelope(self, d: Tensor, rho: Tensor, order: int) -> list[Tensor]:
        r2 = rho * rho
        m = torch.exp(-r2 * d * d)
        out = [m]
        if order >= 1:
            out.append(-2.0 * r2 * d * m)
        if order >= 2:
            out.append((4.0 * r2 * r2 * d * d - 2.0 * r2) * m)
        return out


@final
class StudentTSpectralMixture(SpectralMixture1D):
    r"""Matérn-5/2 envelope: a Student-t-mixture spectrum.

    With :math:`a = \sqrt5\rho` and :math:`r = |d|`:
    :math:`m = (1 + a r + a^2 r^2/3) e^{-a r}`,
    :math:`m' = -\tfrac{a^2}{3} d (1 + a r) e^{-a r}`,
    :math:`m'' = -\tfrac{a^2}{3} (1 + a r - a^2 r^2) e^{-a r}`;
    all three are continuous at :math:`d = 0`.
    """

    def _envelope(self, d: Tensor, rho: Tensor, order: int) -> list[Tensor]:
        a = _SQRT5 * rho
        r = d.abs()
        ar = a * r
        e = torch.exp(-ar)
        out = [(1.0 + ar + ar * ar / 3.0) * e]
        if order >= 1:
            out.append(-(a * a / 3.0) * d * (1.0 + ar) * e)
        if order >= 2:
            out.append(-(a * a / 3.0) * (1.0 + ar - ar * ar) * e)
        return out
