r"""Training and evaluation of N-body models, and the two physics-free baselines.

Loss and metric are the EGNN/SEGNN ones: the mean squared error of the predicted
positions over systems, particles and coordinates,
:math:`\frac{1}{3 B N} \sum |\hat x_i - x_i|^2`.

Baselines:

* constant velocity, :math:`\hat x = x + v\,\Delta T` (:func:`constant_velocity_mse`);
* EGNN's "Linear" model, :math:`\hat x = x + v\,t^*` with the one parameter
  :math:`t^*` fitted on the training set (least squares, :func:`fit_linear_time`);
  EGNN reports 0.0819 for it on the charged data set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .data import NBodyData

__all__ = [
    "mse",
    "batch_indices",
    "train_epoch",
    "evaluate",
    "constant_velocity_mse",
    "fit_linear_time",
    "linear_mse",
]


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all entries."""
    return (pred - target).square().mean()


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[Tensor]:
    """Indices of the mini-batches of one epoch: a permutation drawn from ``generator`` (or in order if None)."""
    order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: NBodyData, batch_size: int,
                generator: torch.Generator, grad_clip: float | None = None,
                module: torch.nn.Module | None = None) -> float:
    """One pass over ``data`` in shuffled mini-batches; returns the sample-weighted mean training loss.

    Data parallel under ``torch.distributed`` (``module``: the ``DistributedDataParallel``
    wrapper of ``model``): every rank draws the same batches, rank ``r`` of ``W`` computes
    samples ``r, r + W, ...`` of each, and its squared-error sum is scaled by ``W / n`` (``n``
    the entries of the whole batch), so that DDP's average of the gradients is the gradient
    of the whole batch's mean squared error: the serial update, up to summation order.
    Every batch must hold at least ``W`` samples.
    """
    import torch.distributed as dist

    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size!r}")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() \
        else (0, 1)
    module = model if module is None else module
    per_sample = data.target[0].numel()
    model.train()
    total, count = 0.0, 0
    for index in batch_indices(len(data), batch_size, generator):
        if len(index) < world:
            raise ValueError(f"a batch of {len(index)} samples cannot be shared by {world} ranks "
                             f"(choose batch_size and n_train so that every batch has at least {world})")
        b = data.subset(index[rank::world])
        optimizer.zero_grad(set_to_none=True)
        squared = (module(b.pos, b.vel, b.charge) - b.target).square().sum()
        loss = squared * (world / (len(index) * per_sample))
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        squared = squared.detach()
        if world > 1:
            dist.all_reduce(squared)
        total += float(squared) / per_sample
        count += len(index)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: NBodyData, batch_size: int = 500) -> float:
    """MSE of ``model`` on ``data`` (evaluation mode, no gradients)."""
    model.eval()
    total = 0.0
    for index in batch_indices(len(data), batch_size):
        b = data.subset(index)
        total += float((model(b.pos, b.vel, b.charge) - b.target).square().sum())
    return total / data.target.numel()


def constant_velocity_mse(data: NBodyData) -> float:
    r"""MSE of :math:`x + v\,\Delta T` (``data.horizon``)."""
    return float(mse(data.pos + data.vel * data.horizon, data.target))


def fit_linear_time(data: NBodyData) -> float:
    r"""Least-squares :math:`t^* = \langle v, x_T - x \rangle / \langle v, v \rangle` over ``data``
    (0 where every velocity is 0: any time fits as badly)."""
    vv = data.vel.square().sum()
    return float((data.vel * (data.target - data.pos)).sum() / vv) if vv > 0 else 0.0


def linear_mse(data: NBodyData, time: float) -> float:
    """MSE of :math:`x + v\\,t`."""
    return float(mse(data.pos + data.vel * time, data.target))
