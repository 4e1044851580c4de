r"""Training data of the operator transformer: snapshot pairs of trajectories.

A trajectory of snapshots :math:`u(t_0), u(t_1), \dots` becomes *all2all* training
pairs (Poseidon, Herde et al. 2024): from the snapshots :math:`0, s, 2s, \dots, Ks`
(stride :math:`s`, 2 by default) every ordered pair :math:`(i \le j)`, the identity
included, is a sample :math:`(u(t_i), t_j - t_i) \mapsto u(t_j)`:
:math:`(K+1)(K+2)/2` pairs per trajectory. With stride 2 the odd lead times are never
seen in training, so evaluating at them tests the model's continuity in time.

The model's lead time is normalised, :math:`t = (t_j - t_i) / T_\mathrm{norm}` with
:math:`T_\mathrm{norm}` in snapshots (20 for Poseidon's 21-snapshot trajectories).

Fields: the vorticity datasets of the ``navier_stokes`` case are turned into velocity
channels :math:`(u, v)` (spectrally, through the stream function), optionally padded to
Poseidon's four channels :math:`(\rho, u, v, p)` with :math:`\rho = 1`, :math:`p = 0`.
Shapes are channel-first: ``(n_traj, n_t, C, N, N)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "all2all_pairs",
    "velocity_channels",
    "ChannelScaler",
    "PairData",
    "VelocitySymmetries",
    "relative_l1",
    "relative_l1_loss",
]


def all2all_pairs(n_snapshots: int, stride: int = 2, *, max_index: int | None = None) -> Tensor:
    """All ordered pairs ``(i, j)``, ``i <= j``, of the snapshots ``0, stride, 2 stride, ...``.

    Parameters
    ----------
    n_snapshots : int
        Snapshots per trajectory (indices ``0 .. n_snapshots - 1``).
    stride : int
        Spacing of the snapshots used.
    max_index : int, optional
        Last snapshot index allowed (default ``n_snapshots - 1``).

    Returns
    -------
    Tensor, shape ``(P, 2)``, int64
        ``P = (K+1)(K+2)/2`` with ``K = max_index // stride``; sorted by ``i`` then ``j``.
    """
    if n_snapshots < 1 or stride < 1:
        raise ValueError(f"expected n_snapshots >= 1 and stride >= 1, got {n_snapshots}, {stride}")
    last = n_snapshots - 1 if max_index is None else int(max_index)
    if not 0 <= last < n_snapshots:
        raise ValueError(f"expected 0 <= max_index < {n_snapshots}, got {last}")
    idx = torch.arange(0, last + 1, stride)
    i, j = torch.triu_indices(len(idx), len(idx))
    return torch.stack([idx[i], idx[j]], dim=1)


def velocity_channels(vorticity: Tensor, length: float, *, four_channels: bool = False) -> Tensor:
    r"""Velocity :math:`(u, v)` of periodic vorticity fields, as channels.

    Parameters
    ----------
    vorticity : Tensor, shape ``(..., N, N)``, real
    length : float
        Side of the periodic box.
    four_channels : bool
        Return :math:`(\rho, u, v, p) = (1, u, v, 0)`, the layout of Poseidon's checkpoints.

    Returns
    -------
    Tensor, shape ``(..., 2, N, N)`` (``(..., 4, N, N)`` with ``four_channels``)
    """
    from sciml.operators.spectral import FourierGrid2D

    n = vorticity.shape[-1]
    grid = FourierGrid2D(n, length, dtype=vorticity.dtype, device=vorticity.device)
    u_hat, v_hat = grid.velocity_hat(grid.rfft(vorticity))
    uv = torch.stack([grid.irfft(u_hat), grid.irfft(v_hat)], dim=-3)
    if not four_channels:
        return uv
    ones = torch.ones_like(uv[..., :1, :, :])
    return torch.cat([ones, uv, torch.zeros_like(ones)], dim=-3)


@dataclass
class ChannelScaler:
    """Per-channel affine normalisation ``(x - mean) / std`` of fields ``(..., C, N, N)``.

    Attributes
    ----------
    mean, std : Tensor, shape ``(C,)``
    """

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, fields: Tensor, floor: float = 1e-6) -> "ChannelScaler":
        """Mean and standard deviation of each channel over everything else: ``fields (..., C, H, W)``.

        A constant channel (std at most ``floor`` times its own largest magnitude: round-off) gets
        std 1; every other keeps its own scale, however small next to the other channels'.
        """
        if fields.dim() < 3 or fields.numel() == 0:
            raise ValueError(f"expected fields of shape (..., C, H, W) with some values, got {tuple(fields.shape)}")
        c = fields.shape[-3]
        flat = fields.transpose(0, -3).reshape(c, -1).double()
        mean, std = flat.mean(dim=1), flat.std(dim=1)
        std = torch.where(std > floor * flat.abs().amax(dim=1), std, torch.ones_like(std))
        return cls(mean.to(fields.dtype), std.to(fields.dtype))

    def _shape(self, x: Tensor) -> tuple[Tensor, Tensor]:
        view = (-1, 1, 1)
        return self.mean.to(x).view(view), self.std.to(x).view(view)

    def encode(self, x: Tensor) -> Tensor:
        mean, std = self._shape(x)
        return (x - mean) / std

    def decode(self, x: Tensor) -> Tensor:
        mean, std = self._shape(x)
        return x * std + mean

    def state_dict(self) -> dict:
        return {"mean": self.mean.cpu(), "std": self.std.cpu()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "ChannelScaler":
        return cls(state["mean"], state["std"])


class PairData:
    """Training pairs drawn from trajectories without copying them.

    Parameters
    ----------
    fields : Tensor, shape ``(n_traj, n_t, C, N, N)``
        Trajectories (already normalised, on the training device).
    pairs : Tensor, shape ``(P, 2)``
        Snapshot index pairs ``(i, j)`` used for every trajectory (:func:`all2all_pairs`).
    t_norm : float
        Lead times are ``(j - i) / t_norm``.
    """

    def __init__(self, fields: Tensor, pairs: Tensor, t_norm: float):
        if fields.dim() != 5:
            raise ValueError(f"expected fields of shape (n_traj, n_t, C, N, N), got {tuple(fields.shape)}")
        if pairs.dim() != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
            raise ValueError(f"expected pairs of shape (P, 2), P >= 1, got {tuple(pairs.shape)}")
        if int(pairs.max()) >= fields.shape[1] or int(pairs.min()) < 0:
            raise ValueError(f"pair indices must lie in [0, {fields.shape[1]}), got {int(pairs.min())}..{int(pairs.max())}")
        if not 0 < t_norm < math.inf:
            raise ValueError(f"expected a positive, finite t_norm, got {t_norm}")
        self.fields, self.pairs, self.t_norm = fields, pairs.to(torch.long), float(t_norm)

    def __len__(self) -> int:
        return self.fields.shape[0] * len(self.pairs)

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Samples ``index`` (trajectory-major): inputs ``(B, C, N, N)``, lead times ``(B,)``, targets."""
        index = index.to(torch.long).cpu()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise IndexError(f"sample indices must lie in [0, {len(self)}), got {int(index.min())}..{int(index.max())}")
        traj, pair = index // len(self.pairs), index % len(self.pairs)
        i, j = self.pairs[pair, 0], self.pairs[pair, 1]
        t = ((j - i).to(self.fields.dtype) / self.t_norm).to(self.fields.device)
        return self.fields[traj, i], t, self.fields[traj, j]


class VelocitySymmetries:
    r"""A symmetry group of the equation acting on (normalised) velocity channels, for augmentation.

    The Navier–Stokes equations commute with the symmetries of the periodic grid that keep the
    forcing (:class:`~sciml.solvers.navier_stokes.GridSymmetries`: grid translations, and the
    square's reflections and quarter turns), with the velocity turning as a vector. A symmetry
    :math:`g` maps a solution pair :math:`(u(t_i), u(t_j))` to another, :math:`(g u(t_i), g u(t_j))`;
    for data drawn from a distribution the group leaves unchanged it is another sample of the same
    data set. The scOT's window attention is equivariant to none of them (the FNO only to the
    translations), so moved samples teach both what a few trajectories cannot.

    Parameters
    ----------
    group : GridSymmetries
    velocity : tuple of two ints
        Channels of the velocity components along the field's axes ``-2`` and ``-1`` (as
        :func:`velocity_channels` returns them); other channels are scalars.
    scaler : ChannelScaler, optional
        The fields' normalisation: the symmetry acts on the physical fields, so a sign flip or
        the swap of two components with different statistics stays exact.
    """

    def __init__(self, group, velocity: tuple[int, int] = (0, 1), scaler: ChannelScaler | None = None):
        self.group, self.velocity, self.scaler = group, (int(velocity[0]), int(velocity[1])), scaler

    def __len__(self) -> int:
        return len(self.group)

    def apply(self, fields: Tensor, elements: Sequence[int]) -> Tensor:
        """``fields`` ``(B, ..., C, N, N)`` with sample ``b`` moved by group element ``elements[b]``."""
        if self.scaler is not None:
            fields = self.scaler.decode(fields)
        out = torch.stack([self.group.apply_vector(x, int(e), self.velocity) for x, e in zip(fields, elements)])
        return out if self.scaler is None else self.scaler.encode(out)


def _group_sums(x: Tensor, groups: Sequence[Sequence[int]] | None) -> Tensor:
    """Sum of ``|x|`` per sample and channel group: ``(B, G)``."""
    per_channel = x.abs().flatten(2).sum(-1)  # (B, C)
    if groups is None:
        return per_channel.sum(-1, keepdim=True)
    return torch.stack([per_channel[:, list(g)].sum(-1) for g in groups], dim=-1)


def relative_l1(prediction: Tensor, target: Tensor, groups: Sequence[Sequence[int]] | None = None,
                eps: float = 1e-10) -> Tensor:
    r"""Relative :math:`L^1` error of each sample, averaged over channel groups.

    .. math:: e_b = \frac1G\sum_g \frac{\sum_{c\in g}\|\hat y_{bc} - y_{bc}\|_1}{\sum_{c\in g}\|y_{bc}\|_1}

    Parameters
    ----------
    prediction, target : Tensor, shape ``(B, C, N, N)``
    groups : list of lists of channel indices, optional
        Channels measured together (e.g. the velocity components); default one group.

    Returns
    -------
    Tensor, shape ``(B,)``
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(f"expected equal shapes (B, C, N, N), got {tuple(prediction.shape)} and {tuple(target.shape)}")
    err = _group_sums(prediction - target, groups)
    ref = _group_sums(target, groups)
    return (err / (ref + eps)).mean(-1)


def relative_l1_loss(prediction: Tensor, target: Tensor, groups: Sequence[Sequence[int]] | None = None) -> Tensor:
    """Mean over the batch of :func:`relative_l1` (per-sample, so data-parallel ranks agree)."""
    return relative_l1(prediction, target, groups).mean()
