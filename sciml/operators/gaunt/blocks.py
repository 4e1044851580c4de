r"""Equivariant blocks over node features of spherical functions: the paper's three operations.

Luo, Chen, Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier
Basis via Gaunt Tensor Products", ICLR 2024, Section 4: equivariant *feature
interaction*, equivariant *convolution*, equivariant *many-body interaction*.

Features are ``(N, C, (L+1)**2)``: per node and channel a spherical function of
degree :math:`\le L` in e3nn's real-SH layout (index ``l*l + l + m``,
``normalization="integral"``, polar axis :math:`y`), i.e. the irreps
:math:`C \times (0e + 1o + 2e + \dots)` (:func:`~sciml.operators.gaunt.channelwise.sh_irreps`).

Blocks
------
* :class:`EquivariantLinear` -- channel mixing, one matrix per degree;
* :class:`Gate` -- scalars through SiLU, degree :math:`l > 0` scaled by a sigmoid
  gate computed from the scalars;
* :class:`FeatureInteraction` -- self-mix: product of two linear mixes of a node's
  own features (the paper's "Gaunt Selfmix");
* :class:`EquivariantConvolution` -- messages: neighbour features times the
  spherical harmonics of the edge direction, radial weights from an MLP of
  invariant edge scalars, summed over edges (``index_add``);
* :class:`ManyBodyInteraction` -- :math:`\nu`-fold product of affine mixes of the
  features (MACE-style body order :math:`\nu + 1`), one transform in per factor
  and one out for the whole chain.

Every product block takes ``product="gaunt"`` (:class:`~sciml.operators.gaunt.channelwise.GauntChannelProduct`)
or ``product="cg"`` (:class:`~sciml.operators.gaunt.channelwise.CGChannelProduct`, e3nn
Clebsch–Gordan products over the same irreps): the same block either way.

Symmetry
--------
For a rotation :math:`R` with Wigner matrices :math:`D_l(R)`, every block
satisfies :math:`f(D x) = D f(x)` (edge directions rotated by :math:`R` too).
Gaunt products only have paths with :math:`l_1 + l_2 + l_3` even, and the
spherical harmonics obey :math:`Y_l(-\hat r) = (-1)^l Y_l(\hat r)`; so with degree
:math:`l` carrying parity :math:`(-1)^l` the blocks are also equivariant under the
inversion :math:`x_l \mapsto (-1)^l x_l`, :math:`\hat r \mapsto -\hat r`, hence
under all of :math:`O(3)` (``o3.Irreps.spherical_harmonics(L).D_from_matrix(R)``
gives this representation for proper and improper :math:`R`). They cannot build
pseudo-tensors (odd paths such as the cross product); the CG variant over the same
irreps is restricted to the same paths by parity. Blocks act node-wise or through
sums over edges, so they commute with permutations of the nodes.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import Tensor

from .channelwise import channel_product
from .layout import as_count, as_degree, check_coefficients, degree_index, num_coefficients

__all__ = [
    "EquivariantLinear",
    "Gate",
    "FeatureInteraction",
    "EquivariantConvolution",
    "ManyBodyInteraction",
]


def _check_features(x: Tensor, channels: int, lmax: int, like: Tensor, name: str = "features") -> None:
    """``x`` of shape ``(..., channels, (lmax+1)**2)``, with the dtype and device of ``like`` (a parameter)."""
    n = num_coefficients(lmax)
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[-2:] != (channels, n):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected {name} of shape (..., {channels}, {n}) (channels, degrees <= {lmax}), "
                         f"got {shape}")
    check_coefficients(x, lmax, name, like.dtype, like.device)


class EquivariantLinear(torch.nn.Module):
    r"""Per-degree channel mixing: :math:`y_{l} = W_l\, x_{l} \ (+\, b \text{ for } l = 0)`.

    .. math::

        y_{c' l m} = \sum_c W^{(l)}_{c' c}\, x_{c l m} + \delta_{l0}\, b_{c'},

    one ``(C_out, C_in)`` matrix per degree, acting on the channel axis only (so it
    commutes with every :math:`D_l(R)` and with parity). Degrees above
    ``lmax_in`` come out zero; degrees above ``lmax_out`` are dropped.
    :math:`W^{(l)}` starts :math:`\mathcal N(0, 1/C_\text{in})`, :math:`b` at 0.

    Shapes
    ------
    ``(..., C_in, (L_in+1)**2)`` -> ``(..., C_out, (L_out+1)**2)``.

    Examples
    --------
    >>> import torch
    >>> lin = EquivariantLinear(8, 16, lmax_in=2)
    >>> lin(torch.randn(5, 8, 9)).shape
    torch.Size([5, 16, 9])
    """

    def __init__(self, channels_in: int, channels_out: int, lmax_in: int, lmax_out: Optional[int] = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.channels_in, self.channels_out = as_count(channels_in, "channels_in"), as_count(channels_out,
                                                                                                "channels_out")
        self.lmax_in = as_degree(lmax_in, "lmax_in")
        self.lmax_out = self.lmax_in if lmax_out is None else as_degree(lmax_out, "lmax_out")
        n_weights = min(self.lmax_in, self.lmax_out) + 1
        self.weight = torch.nn.Parameter(torch.randn(n_weights, self.channels_out, self.channels_in)
                                         / math.sqrt(self.channels_in))
        self.bias = torch.nn.Parameter(torch.zeros(self.channels_out)) if bias else None
        self.register_buffer("degrees", degree_index(n_weights - 1), persistent=False)

    def extra_repr(self) -> str:
        return (f"channels_in={self.channels_in}, channels_out={self.channels_out}, lmax_in={self.lmax_in}, "
                f"lmax_out={self.lmax_out}, bias={self.bias is not None}")

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.channels_in, self.lmax_in, self.weight)
        n = self.degrees.shape[0]
        y = torch.einsum("koc,...ck->...ok", self.weight.index_select(0, self.degrees), x[..., :n])
        if self.bias is not None:
            y = torch.cat([y[..., :1] + self.bias[:, None], y[..., 1:]], -1)
        if self.lmax_out > self.lmax_in:
            n_zero = num_coefficients(self.lmax_out) - n
            y = torch.cat([y, y.new_zeros(*y.shape[:-1], n_zero)], -1)
        return y


class Gate(torch.nn.Module):
    r"""Gated nonlinearity: SiLU on the scalars, sigmoid gates from the scalars on :math:`l > 0`.

    .. math::

        y_{c0} = \operatorname{SiLU}(x_{c0}), \qquad
        y_{clm} = \sigma\Big(\sum_{c'} V_{(c,l), c'}\, x_{c'0} + a_{cl}\Big)\, x_{clm}
        \quad (l \ge 1).

    The scalars :math:`x_{c0}` are invariant under rotations and inversion (degree 0
    is even), so the gates are too and the block is :math:`O(3)`-equivariant.

    Shapes
    ------
    ``(..., C, (L+1)**2)`` -> same.

    Examples
    --------
    >>> import torch
    >>> Gate(8, 2)(torch.randn(5, 8, 9)).shape
    torch.Size([5, 8, 9])
    """

    def __init__(self, channels: int, lmax: int) -> None:
        super().__init__()
        self.channels, self.lmax = as_count(channels, "channels"), as_degree(lmax, "lmax")
        self.gates = torch.nn.Linear(self.channels, self.channels * self.lmax) if self.lmax > 0 else None
        self.register_buffer("gate_index", (degree_index(self.lmax) - 1)[1:], persistent=False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, lmax={self.lmax}"

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.channels, self.lmax, x if self.gates is None else self.gates.weight)
        scalars = x[..., 0]
        out = torch.nn.functional.silu(scalars)[..., None]
        if self.gates is None:
            return out
        gates = torch.sigmoid(self.gates(scalars)).unflatten(-1, (self.channels, self.lmax))
        return torch.cat([out, x[..., 1:] * gates.index_select(-1, self.gate_index)], -1)


class FeatureInteraction(torch.nn.Module):
    r"""Equivariant feature interaction (self-mix) of a node's features.

    .. math::

        y = W_\text{out}\big( (W_1 x) \circledast_w (W_2 x) \big),

    :math:`W_1, W_2, W_\text{out}` :class:`EquivariantLinear` (with :math:`l = 0`
    bias), :math:`\circledast_w` the channel-wise product with per-degree
    (``"gaunt"``) or per-path (``"cg"``) weights. With ``"gaunt"`` this is the
    paper's Gaunt Selfmix: all degree pairs of the node's own features interact in one
    product on the sphere.

    Parameters
    ----------
    channels, lmax : int
        Input ``(C, (L+1)**2)``.
    lmax_out : int, optional
        Output degree (default ``lmax``).
    product : {"gaunt", "cg"}
    method : {"auto", "grid", "fourier", "matrix"}
        Path of the Gaunt products (:class:`~sciml.operators.gaunt.channelwise.GauntChannelProduct`;
        ignored by ``"cg"``).

    Shapes
    ------
    ``(..., C, (L+1)**2)`` -> ``(..., C, (L_out+1)**2)``.

    Examples
    --------
    >>> import torch
    >>> FeatureInteraction(8, 2)(torch.randn(5, 8, 9)).shape
    torch.Size([5, 8, 9])
    """

    def __init__(self, channels: int, lmax: int, lmax_out: Optional[int] = None, product: str = "gaunt",
                 method: str = "auto") -> None:
        super().__init__()
        self.channels, self.lmax = as_count(channels, "channels"), as_degree(lmax, "lmax")
        self.lmax_out = self.lmax if lmax_out is None else as_degree(lmax_out, "lmax_out")
        self.left = EquivariantLinear(channels, channels, lmax)
        self.right = EquivariantLinear(channels, channels, lmax)
        self.product = channel_product(product, (lmax, lmax), self.lmax_out, (channels, channels), method)
        self.out = EquivariantLinear(channels, channels, self.lmax_out)

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.channels, self.lmax, self.left.weight)
        return self.out(self.product(self.left(x), self.right(x)))


class EquivariantConvolution(torch.nn.Module):
    r"""Equivariant convolution: neighbour features times edge spherical harmonics, summed over edges.

    For an edge :math:`j \to i` with direction :math:`\hat r_{ij}` and invariant
    scalars :math:`e_{ij}` (radial basis of :math:`|r_{ij}|`, charges, ...):

    .. math::

        u_{ij} = \big(W_s h_j + W_d h_i\big) \odot R(e_{ij}), \qquad
        m_{ij} = u_{ij} \circledast_w Y(\hat r_{ij}), \qquad
        a_i = \frac{1}{\bar n} \sum_{j \to i} m_{ij},

    with :math:`W_s, W_d` :class:`EquivariantLinear`, :math:`R` an MLP of
    :math:`e_{ij}` giving one weight per channel and degree of :math:`u`,
    :math:`Y(\hat r) = (Y_{lm}(\hat r))_{l \le L_e}` shared by all channels (e3nn
    ``spherical_harmonics(..., normalize=True, normalization="integral")``), and
    :math:`\bar n` a fixed normaliser (the mean number of neighbours). The radial weights
    act on the feature side only: the harmonics' per-degree weights :math:`w` are learned
    constants, so a path's weight is :math:`R_{c,l_1}(e)\,w_{l_2}\,w^\text{out}_{c,l_3}` and the
    filter's degree profile does not change with distance (TFN/NequIP-style filters put a
    radial function on each degree of :math:`Y` instead).

    With ``message_layers`` :math:`K > 1` the message is a :math:`K`-layer steerable MLP
    of the edge, as SEGNN's (two layers there): for :math:`k = 2, \dots, K`

    .. math::

        m_{ij} \leftarrow \big(W_k\,\text{Gate}(m_{ij}) \odot R_k(e_{ij})\big)
            \circledast_w Y(\hat r_{ij}),

    before the sum. One product with :math:`Y` gives a message linear in the direction's
    harmonics; the second gives per-edge terms of second order in it, such as the radial part
    :math:`(v \cdot \hat r)\,\hat r` of a vector feature :math:`v` (a Gaunt product has no
    degree-1 part of :math:`1 \otimes 1`, so it cannot form :math:`v \times \hat r` instead).

    Parameters
    ----------
    channels_in, channels_out : int
    lmax_in, lmax_out, lmax_edge : int
        Degrees of node features in / out and of the edge harmonics.
    edge_features : int
        Number of invariant edge scalars :math:`e_{ij}`.
    radial_hidden : int
        Width of the radial MLP (two hidden layers, SiLU).
    avg_neighbors : float
        :math:`\bar n`.
    message_layers : int, default 1
        :math:`K`, layers of the message function (1: linear in the features); each
        :math:`R_k`, :math:`k \ge 2`, is an MLP with one hidden layer of ``radial_hidden``.
    product, method
        As in :class:`FeatureInteraction`.

    Shapes
    ------
    ``forward(h, edge_index, edge_sh, edge_scalars)``: ``h`` ``(N, C_in, (L_in+1)**2)``;
    ``edge_index`` ``(2, E)`` long, rows (sender :math:`j`, receiver :math:`i`);
    ``edge_sh`` ``(E, (L_e+1)**2)``; ``edge_scalars`` ``(E, F)``; returns
    ``(N, C_out, (L_out+1)**2)``.

    Examples
    --------
    >>> import torch
    >>> conv = EquivariantConvolution(4, 8, 1, 1, 1, edge_features=3)
    >>> edges = torch.tensor([[0, 1, 2], [1, 2, 0]])
    >>> conv(torch.randn(3, 4, 4), edges, torch.randn(3, 4), torch.randn(3, 3)).shape
    torch.Size([3, 8, 4])
    """

    def __init__(self, channels_in: int, channels_out: int, lmax_in: int, lmax_out: int, lmax_edge: int,
                 edge_features: int, radial_hidden: int = 64, avg_neighbors: float = 1.0,
                 message_layers: int = 1, product: str = "gaunt", method: str = "auto") -> None:
        super().__init__()
        self.channels_in, self.channels_out = as_count(channels_in, "channels_in"), as_count(channels_out,
                                                                                                "channels_out")
        self.lmax_in, self.lmax_out, self.lmax_edge = (as_degree(l, name) for l, name in (
            (lmax_in, "lmax_in"), (lmax_out, "lmax_out"), (lmax_edge, "lmax_edge")))
        self.edge_features = as_count(edge_features, "edge_features")
        radial_hidden = as_count(radial_hidden, "radial_hidden")
        if not (isinstance(avg_neighbors, numbers.Real) and math.isfinite(avg_neighbors) and avg_neighbors > 0):
            raise ValueError(f"expected avg_neighbors to be a number > 0, got {avg_neighbors!r}")
        self.avg_neighbors = float(avg_neighbors)
        self.source = EquivariantLinear(channels_in, channels_out, lmax_in)
        self.target = EquivariantLinear(channels_in, channels_out, lmax_in, bias=False)
        self.radial = torch.nn.Sequential(
            torch.nn.Linear(self.edge_features, radial_hidden), torch.nn.SiLU(),
            torch.nn.Linear(radial_hidden, radial_hidden), torch.nn.SiLU(),
            torch.nn.Linear(radial_hidden, self.channels_out * (self.lmax_in + 1)),
        )
        self.product = channel_product(product, (lmax_in, lmax_edge), lmax_out, (channels_out, 1), method)
        self.register_buffer("degrees_in", degree_index(self.lmax_in), persistent=False)
        self.message_layers = as_count(message_layers, "message_layers")
        self.register_buffer("degrees_out", degree_index(self.lmax_out), persistent=False)
        self.message_gates, self.message_mixes = torch.nn.ModuleList(), torch.nn.ModuleList()
        self.message_radials, self.message_products = torch.nn.ModuleList(), torch.nn.ModuleList()
        for _ in range(self.message_layers - 1):
            self.message_gates.append(Gate(channels_out, self.lmax_out))
            self.message_mixes.append(EquivariantLinear(channels_out, channels_out, self.lmax_out))
            self.message_radials.append(torch.nn.Sequential(
                torch.nn.Linear(self.edge_features, radial_hidden), torch.nn.SiLU(),
                torch.nn.Linear(radial_hidden, self.channels_out * (self.lmax_out + 1)),
            ))
            self.message_products.append(
                channel_product(product, (self.lmax_out, lmax_edge), self.lmax_out, (channels_out, 1), method))

    def extra_repr(self) -> str:
        return f"avg_neighbors={self.avg_neighbors}, message_layers={self.message_layers}"

    def forward(self, h: Tensor, edge_index: Tensor, edge_sh: Tensor, edge_scalars: Tensor) -> Tensor:
        like = self.source.weight
        _check_features(h, self.channels_in, self.lmax_in, like, "h")
        if h.ndim != 3:
            raise ValueError(f"expected h of shape (N, {self.channels_in}, {num_coefficients(self.lmax_in)}) "
                             f"(one graph; batch graphs by concatenating their nodes), got {tuple(h.shape)}")
        if edge_index.ndim != 2 or edge_index.shape[0] != 2 or edge_index.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"expected edge_index of shape (2, E) and an integer dtype, got "
                             f"{tuple(edge_index.shape)} {edge_index.dtype}")
        n_edges = edge_index.shape[-1]
        # the node numbers are checked on the CPU only (on a GPU, reading them back would stall every forward)
        if n_edges and edge_index.device.type == "cpu" and (int(edge_index.min()) < 0
                                                            or int(edge_index.max()) >= h.shape[0]):
            raise ValueError(f"expected edge_index entries in [0, {h.shape[0]}) (node numbers), got "
                             f"[{int(edge_index.min())}, {int(edge_index.max())}]")
        if edge_sh.shape != (n_edges, num_coefficients(self.lmax_edge)):
            raise ValueError(f"expected edge_sh of shape ({n_edges}, {num_coefficients(self.lmax_edge)}), "
                             f"got {tuple(edge_sh.shape)}")
        check_coefficients(edge_sh, self.lmax_edge, "edge_sh", like.dtype, like.device)
        if edge_scalars.shape != (n_edges, self.edge_features) or edge_scalars.dtype != like.dtype:
            raise ValueError(f"expected edge_scalars of shape ({n_edges}, {self.edge_features}) and dtype "
                             f"{like.dtype}, got {tuple(edge_scalars.shape)} {edge_scalars.dtype}")
        src, dst = edge_index
        u = self.source(h).index_select(0, src) + self.target(h).index_select(0, dst)
        weights = self.radial(edge_scalars).unflatten(-1, (self.channels_out, self.lmax_in + 1))
        messages = self.product(u * weights.index_select(-1, self.degrees_in), edge_sh[:, None, :])
        for gate, mix, radial, product in zip(self.message_gates, self.message_mixes, self.message_radials,
                                              self.message_products):
            weights = radial(edge_scalars).unflatten(-1, (self.channels_out, self.lmax_out + 1))
            messages = product(mix(gate(messages)) * weights.index_select(-1, self.degrees_out), edge_sh[:, None, :])
        out = messages.new_zeros(h.shape[0], *messages.shape[1:])
        return out.index_add_(0, dst, messages) / self.avg_neighbors


class ManyBodyInteraction(torch.nn.Module):
    r"""Equivariant many-body interaction: a :math:`\nu`-fold product of affine mixes.

    .. math::

        y = W_\text{out}\Big( (W_1 x + b_1) \circledast (W_2 x + b_2) \circledast
            \cdots \circledast (W_\nu x + b_\nu) \Big),

    :math:`b_k` on degree 0 only. Expanding the product gives every correlation
    order :math:`1, \dots, \nu` of the (aggregated) neighbour features, so with
    :math:`x = \sum_j m_{ij}` this is a MACE-style product basis of body order up
    to :math:`\nu + 1`. With ``"gaunt"`` it is one :math:`\nu`-input
    product (:class:`~sciml.operators.gaunt.sphere_grid.SphereGridGauntProduct` or
    :class:`~sciml.operators.gaunt.fourier.FourierGauntProduct`): each factor is
    transformed once, the pointwise product taken on the grid, and the result
    projected once -- no truncation between factors. With ``"cg"`` it is a chain of
    :math:`\nu - 1` e3nn products, truncated at :math:`L_\text{out}` after each.
    The biases :math:`b_k` start at 1, so that at initialisation the block already
    passes every lower-order term through. (The authors' MACE block instead sums
    :math:`\sum_{\nu'} w_{\nu'} \odot [x \circledast \cdots \circledast x]` with the same
    :math:`x` in every factor and a free weight per correlation order, channel and output
    degree; here the coefficient of each order is a product of factor parameters, and each
    factor has its own channel mix.)

    Parameters
    ----------
    channels, lmax : int
    correlation : int
        :math:`\nu \ge 2`.
    lmax_out : int, optional
        Output degree (default ``lmax``).
    product, method
        As in :class:`FeatureInteraction`.

    Shapes
    ------
    ``(..., C, (L+1)**2)`` -> ``(..., C, (L_out+1)**2)``.

    Examples
    --------
    >>> import torch
    >>> ManyBodyInteraction(8, 2, correlation=3)(torch.randn(5, 8, 9)).shape
    torch.Size([5, 8, 9])
    """

    def __init__(self, channels: int, lmax: int, correlation: int, lmax_out: Optional[int] = None,
                 product: str = "gaunt", method: str = "auto") -> None:
        super().__init__()
        self.channels, self.lmax = as_count(channels, "channels"), as_degree(lmax, "lmax")
        self.correlation = correlation = as_count(correlation, "correlation", minimum=2)
        self.lmax_out = self.lmax if lmax_out is None else as_degree(lmax_out, "lmax_out")
        self.factors = torch.nn.ModuleList(EquivariantLinear(channels, channels, lmax) for _ in range(correlation))
        with torch.no_grad():
            for f in self.factors:
                f.bias.fill_(1.0)
        self.product = channel_product(product, (lmax,) * correlation, self.lmax_out, (channels,) * correlation,
                                       method)
        self.out = EquivariantLinear(channels, channels, self.lmax_out)

    def extra_repr(self) -> str:
        return f"correlation={self.correlation}"

    def forward(self, x: Tensor) -> Tensor:
        _check_features(x, self.channels, self.lmax, self.out.weight)
        return self.out(self.product(*(f(x) for f in self.factors)))
