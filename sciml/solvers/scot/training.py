r"""Step-based, data-parallel training of time-conditioned operators :math:`(x, t) \mapsto y`.

One :class:`Trainer` serves the scOT and its FNO baseline. Training is defined by a
number of optimiser steps on global batches of ``batch_size`` samples; the samples of
a global batch come from a permutation of the dataset seeded by ``(seed, epoch)``, so
every rank knows the whole batch without communication and takes its share (samples
``rank, rank + W, ...``). Under ``torch.distributed`` the model is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages gradients over
the ``W`` ranks; each rank's loss is its samples' sum scaled by ``W / B``, so the
averaged gradient is that of the per-sample mean over the global batch — the same
update as one process with the whole batch, up to floating-point summation order.

Optimiser: AdamW with separate learning rates for the parameter groups the model
names (:meth:`ScOT.parameter_groups`: embedding/recovery, time-conditioned norms,
the rest), a linear warm-up and a cosine decay to zero over ``steps``, gradient
clipping by global norm. :meth:`Trainer.state_dict` holds everything a resumed run
needs to continue bit for bit: weights, optimiser and scheduler state, the step, and
the RNG state.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from sciml.parallel import settle_gradient_buckets

from .data import PairData, VelocitySymmetries, relative_l1

__all__ = ["Trainer", "cosine_schedule"]


def cosine_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Train ``model(x, t)`` on :class:`PairData` for a fixed number of steps.

    Parameters
    ----------
    model : nn.Module
        Called as ``model(x, t)`` with ``x`` of shape ``(B, C, N, N)`` and ``t`` of shape
        ``(B,)``. If it has a ``parameter_groups()`` method returning
        ``{name: [parameters]}``, learning rates per group come from ``lr_groups``.
    data : PairData
    steps : int
        Optimiser steps.
    batch_size : int
        Global batch (over all ranks); at least the number of ranks.
    lr : float
        Peak learning rate of the groups not named in ``lr_groups``.
    lr_groups : dict, optional
        Peak learning rate per named parameter group.
    weight_decay, warmup, clip : float, int, float
        AdamW's decoupled weight decay; warm-up steps; max global gradient norm (0: none).
    groups : list of lists of int, optional
        Channel groups of the relative-L1 loss.
    seed : int
        Seeds the sample order (and the symmetries).
    augment : VelocitySymmetries, optional
        Moves each sample, input and target alike, by a random element of the group, drawn for the
        whole global batch from ``(seed, step)``: the same on any number of ranks, and again on resume.
    """

    def __init__(self, model: nn.Module, data: PairData, *, steps: int, batch_size: int, lr: float,
                 lr_groups: dict[str, float] | None = None, weight_decay: float = 1e-6, warmup: int = 0,
                 clip: float = 5.0, groups: Sequence[Sequence[int]] | None = None, seed: int = 0,
                 augment: VelocitySymmetries | None = None):
        self.rank, self.world = _distributed()
        if batch_size < self.world:
            raise ValueError(f"batch_size {batch_size} is smaller than the {self.world} ranks")
        if steps < 0:
            raise ValueError(f"expected steps >= 0, got {steps}")
        self.model, self.data = model, data
        self.steps, self.batch_size, self.clip, self.groups, self.seed = int(steps), int(batch_size), clip, groups, seed
        self.warmup, self.augment = int(warmup), augment
        self.step = 0
        self._buckets_settled = False  # see sciml.parallel.settle_gradient_buckets
        self.history: list[dict[str, float]] = []
        self._order: tuple[int, Tensor] | None = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.module: nn.Module = DistributedDataParallel(model, broadcast_buffers=False)
        else:
            self.module = model
        param_groups = []
        named = model.parameter_groups() if hasattr(model, "parameter_groups") else {"body": list(model.parameters())}
        if hasattr(named, "_asdict"):  # a NamedTuple of groups
            named = named._asdict()
        unknown = sorted(set(lr_groups or {}) - set(named))
        if unknown:
            raise ValueError(f"lr_groups: no parameter group {', '.join(map(repr, unknown))} (the model's groups: "
                             f"{', '.join(named)})")
        for name, params in named.items():
            params = [p for p in params if p.requires_grad]
            if params:
                param_groups.append({"params": params, "lr": (lr_groups or {}).get(name, lr), "name": name})
        self.optimizer = torch.optim.AdamW(param_groups, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_schedule(s, self.steps, self.warmup))

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def global_batch(self, step: int) -> Tensor:
        """Sample indices of the global batch of ``step`` (the same on every rank)."""
        epoch, b = divmod(step, self.batches_per_epoch)
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**64)  # any seed a case allows
            self._order = (epoch, torch.randperm(len(self.data), generator=gen))
        return self._order[1][b * self.batch_size: (b + 1) * self.batch_size]

    def train_step(self) -> float:
        """One optimiser step; returns the global batch's mean loss."""
        self.module.train()
        index = self.global_batch(self.step)
        local = index[self.rank:: self.world]
        x, t, y = self.data.batch(local)
        if self.augment is not None:
            gen = torch.Generator().manual_seed(((self.seed + 1) * 1_000_000_007 + self.step) % 2**64)
            elements = torch.randint(len(self.augment), (len(index),), generator=gen)[self.rank:: self.world]
            moved = self.augment.apply(torch.stack([x, y], dim=1), elements)
            x, y = moved[:, 0], moved[:, 1]
        if not self._buckets_settled:  # the first step of this process, fresh or resumed
            settle_gradient_buckets(self.module, lambda: relative_l1(self.module(x, t), y, self.groups).sum())
            self._buckets_settled = True
        per_sample = relative_l1(self.module(x, t), y, self.groups)
        loss = per_sample.sum() * (self.world / len(index))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        total = per_sample.detach().sum()
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(total)
        return float(total) / len(index)

    def run(self, n_steps: int | None = None, callback: Callable[[int, float], None] | None = None) -> None:
        """Take ``n_steps`` steps (default: to the end), calling ``callback(step, loss)`` after each."""
        stop = self.steps if n_steps is None else min(self.steps, self.step + n_steps)
        while self.step < stop:
            t0 = time.perf_counter()
            loss = self.train_step()
            self.history.append({"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                                 "seconds": time.perf_counter() - t0})
            if callback is not None:
                callback(self.step, loss)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "history": list(self.history),
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"])
