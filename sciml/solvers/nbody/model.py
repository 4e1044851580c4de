r"""SEGNN-style E(3)-equivariant particle simulator built from the Gaunt blocks.

Brandstetter, Hesselink, van der Pol, Bekkers, Welling, "Geometric and Physical
Quantities Improve E(3) Equivariant Message Passing" (SEGNN), ICLR 2022, with its
Clebsch–Gordan products replaced by Gaunt products as in Luo, Chen, Krishnapriyan,
"Enabling Efficient Equivariant Operations in the Fourier Basis via Gaunt Tensor
Products", ICLR 2024 (the N-body sanity check). ``product="cg"`` builds the same
network with e3nn Clebsch–Gordan products over the same irreps.

Network (features ``(B*N, C, (L+1)**2)``, see :mod:`sciml.operators.gaunt.blocks`):

* node input, two channels: :math:`|v|\,Y(\hat v)` (its degree-1 block is
  :math:`\sqrt{3/4\pi}\, v`) and :math:`\tanh(|r|)\,Y(\hat r)` with
  :math:`r = x - \bar x` (position relative to the centre of mass, bounded: it
  reaches 11 at the input frame of the CPU preset's data and would be squared by the
  many-body products); lifted to
  ``C`` channels by an :class:`~sciml.operators.gaunt.blocks.EquivariantLinear`.
  The charges enter only through :math:`q_i q_j` on the edges (as in SEGNN), so the
  prediction is invariant under a global charge flip :math:`q \to -q`, like the
  dynamics: with the node charge as a third input channel the network overfit the
  3000 training systems sooner (``benchmarks/RESULTS.md``);
* fully connected graph within each system (``N (N-1)`` directed edges); edge
  attributes :math:`Y(\hat r_{ij})`, :math:`r_{ij} = x_i - x_j`, up to degree
  :math:`L_e`; invariant edge scalars: a Gaussian radial basis of
  :math:`|r_{ij}|` on :math:`[0, r_\text{max}]` and :math:`q_i q_j`;
* ``layers`` times: :math:`a = \text{Conv}(h) + W h` (messages summed over the
  :math:`N - 1` neighbours, as in EGNN and SEGNN; with ``message_layers = 2`` each message
  is a two-layer steerable MLP of the edge, as in SEGNN), :math:`b = \text{ManyBody}_\nu(a)`,
  :math:`h \leftarrow h + \text{Gate}(b)`;
* read-out: an equivariant linear map to one channel of degree 1, a vector
  :math:`\delta_i`; predicted position :math:`x_i + \delta_i`.

Symmetry: rotations and reflections act on the inputs through the Wigner matrices
of the spherical harmonics (degree :math:`l` with parity :math:`(-1)^l`), the
blocks are :math:`O(3)`-equivariant and the read-out is the degree-1 block, which
transforms as a polar vector; only differences of positions enter, so the
displacement is translation invariant and the prediction E(3)-equivariant; nodes
interact through sums over edges, so it is permutation equivariant; charges enter
as :math:`q_i q_j`, so it is invariant under :math:`q \to -q`.

Not SEGNN itself (the paper's network is not published with its code; a review against
SEGNN's code, twenty-second session): there is a MACE-style many-body block in every
layer, which SEGNN does not have; no steerable node attributes (SEGNN conditions its
embedding, update and read-out on the mean edge harmonics and :math:`Y(v)`; here plain
equivariant linear maps); the distance and :math:`q_i q_j` reach the messages through a
radial MLP giving per-degree weights, where SEGNN feeds them to a fully connected tensor
product as two scalars; products are channel-wise with per-degree channel mixing, so
"64 channels" is not SEGNN's 64 weight-balanced irreps. The ``cg`` network is this
network with Clebsch–Gordan products, not SEGNN's. Paper numbers are a loose yardstick.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import Tensor

from sciml.operators.gaunt import (
    PRODUCTS,
    EquivariantConvolution,
    EquivariantLinear,
    Gate,
    ManyBodyInteraction,
)

__all__ = ["NBodyNetwork", "fully_connected_edges"]


def fully_connected_edges(n_systems: int, n_particles: int, device: torch.device | None = None) -> Tensor:
    """Directed edges ``(2, B N (N-1))`` (sender, receiver) between distinct particles of each system.

    Nodes are numbered ``b * N + i``.

    Examples
    --------
    >>> fully_connected_edges(1, 3)
    tensor([[1, 2, 0, 2, 0, 1],
            [0, 0, 1, 1, 2, 2]])
    """
    i = torch.arange(n_particles, device=device)
    dst, src = torch.meshgrid(i, i, indexing="ij")
    keep = dst != src
    offset = (torch.arange(n_systems, device=device) * n_particles)[:, None]
    return torch.stack([(src[keep] + offset).flatten(), (dst[keep] + offset).flatten()])


class NBodyNetwork(torch.nn.Module):
    r"""Predicts positions ``horizon`` later from positions, velocities and charges.

    Parameters
    ----------
    channels : int
        Hidden channels ``C``.
    lmax : int
        Degree of hidden features.
    lmax_edge : int, optional
        Degree of the edge spherical harmonics (default ``lmax``).
    layers : int
        Message-passing layers.
    correlation : int
        :math:`\nu` of the many-body block (body order :math:`\nu + 1`).
    n_radial : int
        Gaussians of the radial basis, centred on ``linspace(0, r_max, n_radial)``.
    r_max : float
        Range of the radial basis (distances beyond it keep :math:`q_i q_j` only).
    radial_hidden : int
        Width of the radial MLPs.
    message_layers : int
        Layers of each message function (1: linear in the features; 2, the default, as SEGNN's
        two-layer steerable MLPs, lowered the test error by a quarter to a third in
        ``benchmarks/RESULTS.md``); see :class:`~sciml.operators.gaunt.blocks.EquivariantConvolution`.
    product : {"gaunt", "cg"}
        Gaunt products or e3nn Clebsch–Gordan products in every block.
    method : {"auto", "grid", "fourier"}
        Path of the Gaunt products (``"auto"``: the per-edge matrix of the edge harmonics
        in the convolutions, the sphere grid in the many-body products; see
        :class:`~sciml.operators.gaunt.channelwise.GauntChannelProduct`).

    Shapes
    ------
    ``forward(pos, vel, charge)``: ``pos``, ``vel`` ``(B, N, 3)``, ``charge`` ``(B, N)``;
    returns predicted positions ``(B, N, 3)``.

    Examples
    --------
    >>> import torch
    >>> net = NBodyNetwork(channels=8, lmax=1, layers=2)
    >>> net(torch.randn(4, 5, 3), torch.randn(4, 5, 3), torch.ones(4, 5)).shape
    torch.Size([4, 5, 3])
    """

    def __init__(self, channels: int = 64, lmax: int = 1, lmax_edge: int | None = None, layers: int = 4,
                 correlation: int = 2, n_radial: int = 16, r_max: float = 10.0, radial_hidden: int = 64,
                 message_layers: int = 2, product: str = "gaunt", method: str = "auto") -> None:
        super().__init__()
        if product not in PRODUCTS:
            raise ValueError(f"expected product in {PRODUCTS}, got {product!r}")
        if int(lmax) != lmax or lmax < 1 or not 0 < r_max < math.inf:
            raise ValueError(f"expected lmax >= 1 (the displacement is the degree-1 read-out) and a positive, "
                             f"finite r_max, got lmax={lmax!r}, r_max={r_max!r}")
        self.init_args = dict(channels=channels, lmax=lmax, lmax_edge=lmax_edge, layers=layers,
                              correlation=correlation, n_radial=n_radial, r_max=r_max,
                              radial_hidden=radial_hidden, message_layers=message_layers,
                              product=product, method=method)
        self.channels, self.lmax = int(channels), int(lmax)
        self.lmax_edge = self.lmax if lmax_edge is None else int(lmax_edge)
        self.product = product
        self.r_max = float(r_max)
        self.register_buffer("centers", torch.linspace(0.0, self.r_max, n_radial), persistent=False)
        self.width = self.r_max / max(n_radial - 1, 1)
        edge_features = n_radial + 1
        self.embed = EquivariantLinear(2, channels, lmax)
        self.convs = torch.nn.ModuleList()
        self.selfs = torch.nn.ModuleList()
        self.bodies = torch.nn.ModuleList()
        self.gates = torch.nn.ModuleList()
        for _ in range(layers):
            self.convs.append(EquivariantConvolution(
                channels, channels, lmax, lmax, self.lmax_edge, edge_features, radial_hidden=radial_hidden,
                message_layers=message_layers, product=product, method=method))
            self.selfs.append(EquivariantLinear(channels, channels, lmax, bias=False))
            self.bodies.append(ManyBodyInteraction(channels, lmax, correlation, product=product, method=method))
            self.gates.append(Gate(channels, lmax))
        self.readout = EquivariantLinear(channels, 1, lmax, lmax_out=1, bias=False)

    def _embed(self, u: Tensor, bounded: bool = False) -> Tensor:
        """``s(|u|) Y(u/|u|)`` up to ``lmax``, ``(..., (L+1)**2)``, with ``s(r) = r`` or ``tanh(r)``."""
        sh = o3.spherical_harmonics(list(range(self.lmax + 1)), u, normalize=True, normalization="integral")
        norm = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        return sh * (torch.tanh(norm) if bounded else norm)

    def edge_scalars(self, dist: Tensor, qq: Tensor) -> Tensor:
        """Invariant edge inputs ``(E, n_radial + 1)``: Gaussians of the distance, and :math:`q_i q_j`."""
        rbf = torch.exp(-0.5 * ((dist[:, None] - self.centers) / self.width) ** 2)
        return torch.cat([rbf, qq[:, None]], -1)

    def forward(self, pos: Tensor, vel: Tensor, charge: Tensor) -> Tensor:
        if pos.ndim != 3 or pos.shape[-1] != 3 or vel.shape != pos.shape or charge.shape != pos.shape[:2]:
            raise ValueError(f"expected pos, vel of shape (B, N, 3) and charge (B, N), got "
                             f"{tuple(pos.shape)}, {tuple(vel.shape)}, {tuple(charge.shape)}")
        n_sys, n_part = charge.shape
        rel = pos - pos.mean(1, keepdim=True)
        x = torch.stack([self._embed(vel), self._embed(rel, bounded=True)], -2)
        h = self.embed(x.flatten(0, 1))  # (B*N, C, n)

        edges = fully_connected_edges(n_sys, n_part, device=pos.device)
        flat_pos, flat_q = pos.reshape(-1, 3), charge.reshape(-1)
        r = flat_pos[edges[1]] - flat_pos[edges[0]]
        sh = o3.spherical_harmonics(list(range(self.lmax_edge + 1)), r, normalize=True, normalization="integral")
        scalars = self.edge_scalars(torch.linalg.vector_norm(r, dim=-1), flat_q[edges[0]] * flat_q[edges[1]])
        for conv, lin, body, gate in zip(self.convs, self.selfs, self.bodies, self.gates):
            a = conv(h, edges, sh, scalars) + lin(h)
            h = h + gate(body(a))
        delta = self.readout(h)[:, 0, 1:4] * math.sqrt(4.0 * math.pi / 3.0)  # degree-1 block = (x, y, z)
        return pos + delta.view(n_sys, n_part, 3)
