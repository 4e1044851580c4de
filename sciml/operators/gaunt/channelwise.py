r"""Channel-wise products of spherical functions: Gaunt, or Clebsch–Gordan over the same irreps.

A feature tensor holds, per node and channel, a spherical function of degree
:math:`\le L` in e3nn's real-SH layout, shape ``(..., C, (L+1)**2)`` (index
``l*l + l + m``). As e3nn irreps, channel block :math:`l` transforms as
:math:`l` with the parity of the spherical harmonics, :math:`(-1)^l`:

.. math::

    C \times 0e + C \times 1o + C \times 2e + \dots \qquad
    (:func:`sh_irreps`).

Both products here are channel-wise (channel :math:`c` of the output is built from
channel :math:`c` of each input; an input with one channel is shared by all) and
have learnable weights:

* :class:`GauntChannelProduct` -- the :math:`\nu`-fold Gaunt product (pointwise
  product of the functions, one transform in per input and one out), with
  per-channel, per-degree weights on every input and on the output: path
  :math:`(l_1, \dots, l_\nu \to l)` of channel :math:`c` is weighted by
  :math:`w^{(1)}_{c l_1} \cdots w^{(\nu)}_{c l_\nu}\, w^{\text{out}}_{c l}`
  (times a fixed normaliser per output degree);
* :class:`CGChannelProduct` -- e3nn ``o3.TensorProduct`` over the same irreps
  (modes ``"uuu"`` / ``"uvu"``), one weight per path and channel; a
  :math:`\nu`-fold product is a chain of :math:`\nu - 1` of them, truncated at
  :math:`L_\text{out}` after each step.

Parity restricts the CG paths to :math:`(-1)^{l_1 + l_2} = (-1)^{l_3}`, i.e.
:math:`l_1 + l_2 + l_3` even: exactly the paths the Gaunt product has. The
difference is the weights (a free weight per path against a product of per-degree
weights) and the cost.

Luo, Chen, Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier
Basis via Gaunt Tensor Products", ICLR 2024.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from e3nn import o3
from torch import Tensor

from .coefficients import gaunt_coefficients
from .fourier import FourierGauntProduct
from .layout import (TableModule, as_count, as_degree, check_coefficients, degree_index, ignore_saved_constants,
                     num_coefficients)
from .sphere_grid import SphereGridGauntProduct

__all__ = [
    "PRODUCTS",
    "GAUNT_METHODS",
    "gaunt_output_variance",
    "GauntChannelProduct",
    "CGChannelProduct",
    "channel_product",
    "sh_irreps",
    "to_irreps_layout",
    "from_irreps_layout",
]

#: Valid ``product`` arguments of the blocks: the product family by name.
PRODUCTS = ("gaunt", "cg")

#: Valid ``method`` arguments of :class:`GauntChannelProduct`.
GAUNT_METHODS = ("auto", "grid", "fourier", "matrix")


def sh_irreps(channels: int, lmax: int) -> o3.Irreps:
    """``channels x 0e + channels x 1o + ...`` up to ``lmax``: the irreps of a ``(C, (L+1)**2)`` feature."""
    return o3.Irreps([(int(channels), (l, (-1) ** l)) for l in range(lmax + 1)])


def to_irreps_layout(x: Tensor, lmax: int) -> Tensor:
    """``(..., C, (L+1)**2)`` (channel-major) -> ``(..., C (L+1)**2)`` in e3nn's :func:`sh_irreps` layout."""
    if x.ndim < 2 or x.shape[-1] != num_coefficients(lmax):
        raise ValueError(f"expected x of shape (..., C, {num_coefficients(lmax)}) for lmax = {lmax}, "
                         f"got {tuple(x.shape)}")
    lead, c = x.shape[:-2], x.shape[-2]
    return torch.cat([x[..., l * l : (l + 1) ** 2].reshape(*lead, c * (2 * l + 1)) for l in range(lmax + 1)], -1)


def from_irreps_layout(x: Tensor, channels: int, lmax: int) -> Tensor:
    """Inverse of :func:`to_irreps_layout`: ``(..., C (L+1)**2)`` -> ``(..., C, (L+1)**2)``."""
    if x.shape[-1] != channels * num_coefficients(lmax):
        raise ValueError(f"expected x of shape (..., {channels * num_coefficients(lmax)}) for {channels} channels "
                         f"and lmax = {lmax}, got {tuple(x.shape)}")
    lead = x.shape[:-1]
    blocks = x.split([channels * (2 * l + 1) for l in range(lmax + 1)], -1)
    return torch.cat([b.reshape(*lead, channels, 2 * l + 1) for l, b in enumerate(blocks)], -1)


def _check_inputs(xs: Sequence[Tensor], degrees: tuple[int, ...], channels: tuple[int, ...], like: Tensor) -> None:
    """Shapes ``(..., c, (l+1)**2)`` per input, and the dtype and device of ``like`` (a module parameter)."""
    if len(xs) != len(degrees):
        raise ValueError(f"expected {len(degrees)} inputs (degrees {degrees}), got {len(xs)}")
    for i, (x, l, c) in enumerate(zip(xs, degrees, channels)):
        n = num_coefficients(l)
        if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[-1] != n or x.shape[-2] != c:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected input {i} of shape (..., {c}, {n}) (degrees <= {l}), got {shape}")
        check_coefficients(x, l, f"input {i}", like.dtype, like.device)


def _degrees_and_channels(degrees: Sequence[int], lmax_out: int,
                          channels: Sequence[int]) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    """The constructor arguments of the channel-wise products, checked."""
    degrees = tuple(as_degree(l, "every degree") for l in degrees)
    channels = tuple(as_count(c, "every channel count") for c in channels)
    if not degrees or len(channels) != len(degrees):
        raise ValueError(f"expected at least one input and one channel count per input, got degrees {degrees}, "
                         f"channels {channels}")
    return degrees, as_degree(lmax_out, "lmax_out"), channels


def gaunt_output_variance(degrees: Sequence[int], lmax_out: int) -> Tensor:
    r"""Variance of each output degree of the plain :math:`\nu`-fold Gaunt product of white-noise inputs.

    If the coefficients of input :math:`i` (degrees :math:`\le L_i`) are independent
    with unit variance, the projection of the pointwise product onto degree :math:`l`
    has, for every :math:`m`, the variance

    .. math::

        \sigma_l^2 = 2\pi \int_{-1}^{1} P_l(t) \prod_i K_{L_i}(t)\, dt, \qquad
        K_L(t) = \sum_{l \le L} \frac{2l+1}{4\pi} P_l(t)

    (:math:`K_L(\hat p \cdot \hat q)` is the covariance of the input at two points;
    the addition theorem reduces the double integral over the sphere to one over the
    angle). Exact by Gauss–Legendre quadrature. For :math:`\nu = 1`, :math:`\sigma_l = 1`.

    Returns
    -------
    Tensor ``(lmax_out + 1,)``, float64.

    Examples
    --------
    >>> gaunt_output_variance([3], 3).round(decimals=12)
    tensor([1., 1., 1., 1.], dtype=torch.float64)
    >>> import math  # l = 0: x_00 y_00 and three x_1m y_1m; l = 1: x_00 y_1m and x_1m y_00
    >>> (gaunt_output_variance([1, 1], 1) * 4 * math.pi).round(decimals=12)
    tensor([4., 2.], dtype=torch.float64)
    """
    if not degrees or any(isinstance(l, bool) or int(l) != l or l < 0 for l in [*degrees, lmax_out]):
        raise ValueError(f"expected one or more degrees and lmax_out, integers >= 0, got {list(degrees)} and "
                         f"{lmax_out!r}")
    degrees, lmax_out = [int(l) for l in degrees], int(lmax_out)
    t, w = np.polynomial.legendre.leggauss((sum(degrees) + lmax_out) // 2 + 1)
    lmax = max(degrees + [lmax_out])
    legendre = np.stack([np.polynomial.legendre.Legendre.basis(l)(t) for l in range(lmax + 1)])  # (l, t)
    kernel = np.ones_like(t)
    for L in degrees:
        kernel = kernel * ((2 * np.arange(L + 1) + 1)[:, None] / (4 * np.pi) * legendre[: L + 1]).sum(0)
    variance = 2 * np.pi * (legendre[: lmax_out + 1] * kernel * w).sum(1)
    variance[sum(degrees) + 1:] = 0.0  # beyond the degrees' sum the product has nothing (round-off otherwise)
    return torch.from_numpy(variance)


def _dense_gaunt_tensor(l1: int, l2: int, lo: int) -> Tensor:
    """``((l1+1)**2, (l2+1)**2, (lo+1)**2)`` float64: all Gaunt coefficients with degrees up to (l1, l2, lo)."""
    g = torch.zeros(num_coefficients(l1), num_coefficients(l2), num_coefficients(lo), dtype=torch.float64)
    for a in range(l1 + 1):
        for b in range(l2 + 1):
            for c in range(abs(a - b), min(a + b, lo) + 1, 2):
                g[a * a : (a + 1) ** 2, b * b : (b + 1) ** 2, c * c : (c + 1) ** 2] = gaunt_coefficients(a, b, c)
    return g


class GauntChannelProduct(TableModule):
    r"""Channel-wise :math:`\nu`-fold Gaunt product with per-degree weights.

    .. math::

        z_{c,l} = \frac{w^{\text{out}}_{c l}}{\sigma_l}
              \Big[\big(w^{(1)}_c \odot x^{(1)}_c\big) \circledast \cdots \circledast
              \big(w^{(\nu)}_c \odot x^{(\nu)}_c\big)\Big]_l,

    where :math:`w \odot x` scales the degree-:math:`l` block of :math:`x` by
    :math:`w_l`, :math:`\circledast` is the Gaunt product (SH expansion of the
    pointwise product, truncated at :math:`L_\text{out}`) and :math:`\sigma_l` the
    standard deviation of its degree-:math:`l` output for independent unit-variance
    input coefficients (:func:`gaunt_output_variance`; e3nn's "component"
    normalisation: white noise in, unit variance out). Weights start at 1.
    Equivariant under rotations and, since only paths with :math:`\sum l` even
    occur, under inversion with :math:`x_l \mapsto (-1)^l x_l`.

    Paths (all exact):

    * ``"grid"`` -- :class:`~sciml.operators.gaunt.sphere_grid.SphereGridGauntProduct`;
    * ``"fourier"`` -- :class:`~sciml.operators.gaunt.fourier.FourierGauntProduct`;
    * ``"matrix"`` -- for :math:`\nu = 2` with one input shared by all channels (an
      edge's spherical harmonics in a convolution): the product with a fixed
      function :math:`s` is a linear map, :math:`M(s)_{ik} = \sum_j s_j G_{jik}`,
      formed once per sample from the dense Gaunt tensor :math:`G` and applied to the
      ``C`` channels as one batched matmul. Per sample it costs
      :math:`C (L+1)^2 (L_\text{out}+1)^2` against about
      :math:`2 C (L+1)^2 N_\text{grid}` for the grid path, :math:`N_\text{grid}`
      growing like :math:`\tfrac32 L^2`: fewer operations at every degree, and
      4.5× fewer at :math:`L = 1`;
    * ``"auto"`` -- ``"matrix"`` where it applies, else ``"grid"``.

    Parameters
    ----------
    degrees : sequence of int
        :math:`L_i` of each input (:math:`\nu` = ``len(degrees)`` >= 1).
    lmax_out : int
        :math:`L_\text{out}`.
    channels : sequence of int
        Channel count of each input: ``C`` or 1 (an input shared by all channels,
        e.g. the spherical harmonics of an edge); the output has ``max(channels)``.
    method : {"auto", "grid", "fourier", "matrix"}

    Shapes
    ------
    ``forward(*xs)``: ``xs[i]`` ``(..., channels[i], (L_i+1)**2)``, leading dimensions
    broadcast; returns ``(..., C, (Lout+1)**2)``.

    Examples
    --------
    >>> import torch
    >>> p = GauntChannelProduct([2, 1], 2, channels=[8, 1])
    >>> p.method
    'matrix'
    >>> p(torch.randn(20, 8, 9), torch.randn(20, 1, 4)).shape
    torch.Size([20, 8, 9])
    """

    def __init__(self, degrees: Sequence[int], lmax_out: int, channels: Sequence[int], method: str = "auto") -> None:
        super().__init__()
        self.degrees, self.lmax_out, self.channels = _degrees_and_channels(degrees, lmax_out, channels)
        out_channels = max(self.channels)
        if any(c not in (1, out_channels) for c in self.channels):
            raise ValueError(f"expected channel counts C or 1, got {self.channels}")
        if method not in GAUNT_METHODS:
            raise ValueError(f"expected method in {GAUNT_METHODS}, got {method!r}")
        shared = [i for i, c in enumerate(self.channels) if c == 1]
        matrix_ok = len(self.degrees) == 2 and len(shared) == 1
        if method == "matrix" and not matrix_ok:
            raise ValueError(f"method 'matrix' needs two inputs, exactly one with 1 channel (got {self.channels})")
        self.method = ("matrix" if matrix_ok else "grid") if method == "auto" else method
        if self.method == "matrix":
            self.shared = shared[0]
            other = 1 - self.shared
            g = _dense_gaunt_tensor(self.degrees[self.shared], self.degrees[other], self.lmax_out)
            self.register_table("gaunt", g)
            self.path = None
        else:
            path_cls = SphereGridGauntProduct if self.method == "grid" else FourierGauntProduct
            self.path = path_cls(self.degrees, self.lmax_out)
        variance = gaunt_output_variance(self.degrees, self.lmax_out)
        normalizer = torch.where(variance > 0, variance.clamp_min(1e-300).rsqrt(), torch.zeros_like(variance))
        self.register_table("normalizer", normalizer)
        ignore_saved_constants(self, ["gaunt", "normalizer"])  # rebuilt here; older state dicts hold them
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.ones(c, l + 1)) for c, l in zip(self.channels, self.degrees)]
        )
        self.weight_out = torch.nn.Parameter(torch.ones(out_channels, self.lmax_out + 1))
        for i, l in enumerate(self.degrees):
            self.register_buffer(f"degrees_{i}", degree_index(l), persistent=False)
        self.register_buffer("degrees_out", degree_index(self.lmax_out), persistent=False)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, lmax_out={self.lmax_out}, channels={self.channels}, method={self.method!r}"

    def forward(self, *xs: Tensor) -> Tensor:
        _check_inputs(xs, self.degrees, self.channels, self.weight_out)
        xs = tuple(x * w.index_select(-1, getattr(self, f"degrees_{i}"))
                   for i, (x, w) in enumerate(zip(xs, self.weights)))
        if self.method == "matrix":
            s, x = xs[self.shared], xs[1 - self.shared]
            m = torch.einsum("...j,jik->...ik", s[..., 0, :], self.gaunt)  # (..., n_x, n_out)
            z = torch.matmul(x, m)
        else:
            z = self.path(*xs)
        return z * (self.normalizer * self.weight_out).index_select(-1, self.degrees_out)


class CGChannelProduct(torch.nn.Module):
    r"""Channel-wise :math:`\nu`-fold Clebsch–Gordan product (e3nn) over the :func:`sh_irreps`.

    .. math::

        z = \big(\cdots\big((x^{(1)} \otimes_{w_1} x^{(2)})_{\le L_\text{out}}
            \otimes_{w_2} x^{(3)}\big)_{\le L_\text{out}} \cdots\big),

    each :math:`\otimes_{w}` an ``e3nn.o3.TensorProduct`` with every path allowed by
    the triangle rule and parity (so :math:`l_1 + l_2 + l_3` even), mode ``"uuu"``
    (both inputs with ``C`` channels) or ``"uvu"`` (the second with one), one learnable
    weight per path and channel, e3nn's default normalisation and initialisation.

    Same arguments, shapes and equivariance as :class:`GauntChannelProduct` (without
    ``method``); the first input must have ``C`` channels and :math:`\nu \ge 2`.

    Examples
    --------
    >>> import torch
    >>> p = CGChannelProduct([2, 1], 2, channels=[8, 1])
    >>> p(torch.randn(20, 8, 9), torch.randn(20, 1, 4)).shape
    torch.Size([20, 8, 9])
    """

    def __init__(self, degrees: Sequence[int], lmax_out: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.degrees, self.lmax_out, self.channels = _degrees_and_channels(degrees, lmax_out, channels)
        if len(self.degrees) < 2:
            raise ValueError(f"expected >= 2 inputs with one channel count each, got {self.degrees}, {self.channels}")
        c = self.channels[0]
        if any(k not in (1, c) for k in self.channels[1:]):
            raise ValueError(f"expected the first input with C channels and the others C or 1, got {self.channels}")
        self.out_channels = c
        steps = []
        l_acc = self.degrees[0]
        for l2, c2 in zip(self.degrees[1:], self.channels[1:]):
            steps.append(self._tensor_product(c, l_acc, c2, l2, self.lmax_out))
            l_acc = self.lmax_out
        self.steps = torch.nn.ModuleList(steps)

    @staticmethod
    def _tensor_product(c1: int, l1: int, c2: int, l2: int, lo: int) -> o3.TensorProduct:
        ir1, ir2, iro = sh_irreps(c1, l1), sh_irreps(c2, l2), sh_irreps(c1, lo)
        mode = "uuu" if c2 == c1 else "uvu"
        instructions = [
            (a, b, k, mode, True)
            for a in range(l1 + 1)
            for b in range(l2 + 1)
            for k in range(lo + 1)
            if abs(a - b) <= k <= a + b and (a + b + k) % 2 == 0
        ]
        return o3.TensorProduct(ir1, ir2, iro, instructions)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, lmax_out={self.lmax_out}, channels={self.channels}"

    def forward(self, *xs: Tensor) -> Tensor:
        _check_inputs(xs, self.degrees, self.channels, next(self.parameters()))
        lead = torch.broadcast_shapes(*(x.shape[:-2] for x in xs))
        flat = [to_irreps_layout(x.expand(*lead, *x.shape[-2:]), l).reshape(-1, c * num_coefficients(l))
                for x, l, c in zip(xs, self.degrees, self.channels)]
        z = flat[0]
        for tp, y in zip(self.steps, flat[1:]):
            z = tp(z, y)
        return from_irreps_layout(z, self.out_channels, self.lmax_out).reshape(
            *lead, self.out_channels, num_coefficients(self.lmax_out))


def channel_product(
    product: str, degrees: Sequence[int], lmax_out: int, channels: Sequence[int], method: str = "auto"
) -> torch.nn.Module:
    """The channel-wise product named ``product`` (one of :data:`PRODUCTS`); ``method`` is Gaunt's path
    (one of :data:`GAUNT_METHODS`, ignored by ``"cg"``)."""
    if product == "gaunt":
        return GauntChannelProduct(degrees, lmax_out, channels, method=method)
    if product == "cg":
        return CGChannelProduct(degrees, lmax_out, channels)
    raise ValueError(f"expected product in {PRODUCTS}, got {product!r}")
