r"""Gaunt tensor products as modules, with the faster exact path chosen by measurement.

Luo, Chen, Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier
Basis via Gaunt Tensor Products", ICLR 2024.

:math:`z = x \circledast y` is the spherical-harmonic expansion, truncated at
:math:`L_\text{out}`, of the pointwise product of the functions
:math:`\sum x_{lm} Y_{lm}` and :math:`\sum y_{lm} Y_{lm}` (e3nn's real, orthonormal
harmonics; see :mod:`.coefficients` for the Gaunt-coefficient form). It is
equivariant: :math:`(D x) \circledast (D y) = D (x \circledast y)` for every
rotation's Wigner matrix :math:`D`. It couples only paths with
:math:`l_1 + l_2 + l_3` even, with fixed path weights; the paper's
parameterisation (:class:`WeightedGauntTensorProduct`) puts learnable weights on
the degrees of each input instead.

Choosing the path (``method="auto"``)
-------------------------------------
Measured on the project's 2-core CPU, shared with other jobs (so: minimum over
repeats, indicative only), float32, batch 1024, forward + backward of
:math:`L_1 = L_2 = L_\text{out} = L`, in ms. "2 threads": wall clock, minimum of 12;
"1 thread": CPU time of the process, minimum of 15 (robust to the other jobs).

==  =========  =========  =========  =========  =========  =========
L   dense 2T   separ. 2T  Fourier    dense 1T   separ. 1T  Fourier
                          2T                               1T
==  =========  =========  =========  =========  =========  =========
2   0.41       0.96       4.1        0.52       1.04       7.2
4   0.98       1.96       10.6       1.20       2.31       21.6
6   1.65       2.91       14.7       3.93       4.43       32.6
7   2.72       3.73       20.7       5.82       4.20       34.4
8   3.72       5.49       29.4       8.93       6.54       48.4
10  8.57       10.17      49.8       15.0       14.5       68.0
11  10.19      12.00      59.2       20.4       12.4       101
12  14.39      12.20      67.2       38.2       21.7       106
14  22.90      18.02      100.7      66.8       28.9       167
==  =========  =========  =========  =========  =========  =========

("dense" and "separable" are the two transforms of the sphere-grid path. The dense
columns predate its hemisphere split; with it, dense / separable CPU time at batch 1024,
fwd+bwd, one thread went from 1.30 to 1.13 at L = 10 and from 1.82 to 1.43 at L = 14,
and stayed ≈ 0.9 at L = 6: ``benchmarks/gaunt.py --threads 1 --clock cpu`` before and
after, benchmarks/RESULTS.md.) For
orientation, e3nn's ``o3.TensorProduct`` computing the same product (the even
paths with the Gaunt path weights; equal to this module to 5e-6 in float32) took,
at :math:`L = 8` in the same runs, 110 ms with 2 threads (grid 4.7-5.0, Fourier 39)
and 169 ms with 1 thread (grid 7.8, Fourier 52): about 22 times the grid path.

The Fourier path spends most of its time in short FFTs (lengths
:math:`\approx 4L` and :math:`3L`) on a torus grid about 2.8 times larger than
the sphere grid. Its ratio to the grid path falls slowly with :math:`L` (from
about 10 at :math:`L \le 5` to 5.5 at 14; 1 thread, smaller batches: 7 at 16,
4.4 at 32, 2.3 at 48) but stays above 1 in every CPU measurement.

Rule: ``"auto"`` is the grid path, with the dense transform up to degree
:func:`~sciml.operators.gaunt.sphere_grid.dense_max_degree` (10 with several threads,
5 with one) and the separable one above, decided at construction from
``torch.get_num_threads()``. With two threads on a quiet machine the dense transform
wins through :math:`L = 11` (its GEMMs use both cores); with one thread the separable
one wins from :math:`L = 6` (``benchmarks/gaunt.py --threads 1 --clock cpu``, at batch 1024
and 4096; benchmarks/RESULTS.md). The transforms' tables are rebuilt at construction
and not saved in ``state_dict()``, so a model saved under one thread count loads under
another. On CUDA the rule is the same but *unmeasured* (no GPU was
available when it was set): re-measure there before relying on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .fourier import FourierGauntProduct
from .layout import as_count, as_degree, check_coefficients, degree_index
from .sphere_grid import SphereGridGauntProduct

__all__ = ["METHODS", "GauntTensorProduct", "WeightedGauntTensorProduct"]

#: Valid ``method`` arguments.
METHODS = ("auto", "grid", "fourier")


class GauntTensorProduct(torch.nn.Module):
    r"""Gaunt tensor product of two spherical functions, :math:`z = x \circledast y`.

    .. math::

        z_{l_3 m_3} = \sum_{l_1 m_1 l_2 m_2} x_{l_1 m_1} y_{l_2 m_2}
        \int_{S^2} Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3}\, d\Omega,
        \qquad l_1 \le L_1,\ l_2 \le L_2,\ l_3 \le L_\text{out}.

    Exact (to round-off) by every method; the tables are computed in float64 and held in
    the default dtype at construction; ``.to(dtype)`` rebuilds them from the float64
    originals (a float32 module cast to float64 is float64-exact), ``.to(device)`` moves them.

    Parameters
    ----------
    lmax1, lmax2, lmax_out : int
        :math:`L_1`, :math:`L_2`, :math:`L_\text{out}`.
    method : {"auto", "grid", "fourier"}
        ``"grid"``: Gauss–Legendre sphere-grid quadrature
        (:class:`~sciml.operators.gaunt.sphere_grid.SphereGridGauntProduct`);
        ``"fourier"``: the paper's 2D-Fourier path
        (:class:`~sciml.operators.gaunt.fourier.FourierGauntProduct`);
        ``"auto"``: the faster one as measured (see the module docstring).

    Shapes
    ------
    ``forward(x, y)``: ``x`` ``(..., (L1+1)**2)``, ``y`` ``(..., (L2+1)**2)``, in the
    layout of ``e3nn.o3.Irreps.spherical_harmonics(L)``; leading dimensions
    (batch, channels) broadcast; returns ``(..., (Lout+1)**2)``.

    Examples
    --------
    >>> import torch
    >>> tp = GauntTensorProduct(2, 1, 3)
    >>> x, y = torch.randn(32, 8, 9), torch.randn(32, 8, 4)
    >>> tp(x, y).shape
    torch.Size([32, 8, 16])
    """

    def __init__(self, lmax1: int, lmax2: int, lmax_out: int, method: str = "auto") -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"expected method in {METHODS}, got {method!r}")
        self.lmax1, self.lmax2, self.lmax_out = (as_degree(l, name) for l, name in
                                                 ((lmax1, "lmax1"), (lmax2, "lmax2"), (lmax_out, "lmax_out")))
        self.method = "grid" if method == "auto" else method
        if self.method == "grid":
            self.path = SphereGridGauntProduct((self.lmax1, self.lmax2), self.lmax_out)
        else:
            self.path = FourierGauntProduct((self.lmax1, self.lmax2), self.lmax_out)

    def extra_repr(self) -> str:
        return f"lmax1={self.lmax1}, lmax2={self.lmax2}, lmax_out={self.lmax_out}, method={self.method!r}"

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.path(x, y)


class WeightedGauntTensorProduct(torch.nn.Module):
    r"""Gaunt tensor product with learnable per-degree weights on each input (the paper's form).

    .. math::

        z = \Big(\sum_{l} w^{(1)}_{l} x_{l}\Big) \circledast
            \Big(\sum_{l} w^{(2)}_{l} y_{l}\Big),

    with :math:`x_l` the degree-:math:`l` block of :math:`x`. Scaling whole degree
    blocks commutes with rotations, so the product stays equivariant. Weights start
    at 1 (the plain product).

    Parameters
    ----------
    lmax1, lmax2, lmax_out : int
        :math:`L_1`, :math:`L_2`, :math:`L_\text{out}`.
    channels : int or None
        ``None``: one weight per degree, shapes ``(L1+1,)``, ``(L2+1,)``. An integer
        ``C``: one per channel and degree, shapes ``(C, L1+1)``, ``(C, L2+1)``, for
        inputs ``(..., C, (L+1)**2)``.
    method : {"auto", "grid", "fourier"}
        As in :class:`GauntTensorProduct`.

    Examples
    --------
    >>> import torch
    >>> tp = WeightedGauntTensorProduct(2, 2, 2, channels=16)
    >>> tp.weight1.shape
    torch.Size([16, 3])
    >>> tp(torch.randn(5, 16, 9), torch.randn(5, 16, 9)).shape
    torch.Size([5, 16, 9])
    """

    def __init__(
        self, lmax1: int, lmax2: int, lmax_out: int, channels: int | None = None, method: str = "auto"
    ) -> None:
        super().__init__()
        self.product = GauntTensorProduct(lmax1, lmax2, lmax_out, method=method)
        lmax1, lmax2 = self.product.lmax1, self.product.lmax2
        self.channels = None if channels is None else as_count(channels, "channels")
        lead = () if self.channels is None else (self.channels,)
        self.weight1 = torch.nn.Parameter(torch.ones(*lead, lmax1 + 1))
        self.weight2 = torch.nn.Parameter(torch.ones(*lead, lmax2 + 1))
        self.register_buffer("degrees1", degree_index(lmax1), persistent=False)
        self.register_buffer("degrees2", degree_index(lmax2), persistent=False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.channels is not None:
            for name, t in (("x", x), ("y", y)):
                if t.ndim < 2 or t.shape[-2] not in (1, self.channels):  # 1: one input shared by the channels
                    raise ValueError(
                        f"expected {name} of shape (..., {self.channels} or 1, (L+1)**2), got {tuple(t.shape)}"
                    )
        check_coefficients(x, self.product.lmax1, "x", self.weight1.dtype, self.weight1.device)
        check_coefficients(y, self.product.lmax2, "y", self.weight2.dtype, self.weight2.device)
        x = x * self.weight1[..., self.degrees1]
        y = y * self.weight2[..., self.degrees2]
        return self.product(x, y)
