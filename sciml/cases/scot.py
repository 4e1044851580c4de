"""Poseidon-style operator transformer: pretraining, fine-tuning and the sample-efficiency study.

Case kind ``scot`` (DESIGN.md, "Poseidon-style scOT"). Stages:

1. **Pretraining** of an :class:`~sciml.solvers.scot.ScOT` on a mixture of operators
   (``data.pretrain``: several Navier–Stokes datasets, e.g. sine-sum and GRF initial
   vorticity), all2all pairs, for ``pretrain.steps`` steps; the weights and the channel
   normalisation are written to ``pretrained.pt`` in the run folder. Skipped when
   ``model.checkpoint`` names such a file from an earlier run (pretrain once,
   fine-tune many times).
2. **Downstream study** on a new operator (``data.train`` / ``data.test``): for every
   ``M`` of ``finetune.m_values`` the pretrained model is fine-tuned on the first ``M``
   training trajectories, and the same architecture is trained from scratch; the
   neuraloperator FNO baseline (lead time as an input channel) is trained for every
   ``M`` of ``baseline.m_values``. Every training of a stage gets the same number of
   optimiser steps. With ``data.validation`` and ``finetune.validate_every`` /
   ``baseline.validate_every``, each training measures the same error on ``n_validation``
   validation trajectories before the first step and every so many steps after, and keeps the
   weights with the lowest (early stopping; otherwise the last weights are kept). Poseidon keeps
   the epoch with the lowest all-pairs validation *loss*; here the criterion is the study's own
   error, from the first to the last snapshot, checked every so many steps. With ``<stage>.augment`` a stage trains on pairs moved by random symmetries of
   the data's equation on the grid (translations, reflections and quarter turns its forcing
   keeps; the velocity turns as a vector), for data whose initial conditions come from a
   distribution these leave unchanged; Poseidon does not augment.
3. **Evaluation** on ``n_test`` test trajectories: the per-sample relative L1 error (%)
   of the direct prediction from the first to the last snapshot, median over the test
   set, is :math:`E(M)`. Each model's :math:`E(M) \\approx C M^{-\\alpha}` is fitted by
   least squares in log–log; the accuracy gain is
   :math:`AG = E_\\mathrm{FNO}(M^*)/E_\\mathrm{scOT}(M^*)` and the efficiency gain
   :math:`EG = M_\\mathrm{FNO}(E_\\mathrm{scOT}(M^*))/M^*` from the fitted curves. The
   pretrained model at :math:`M^*` is also evaluated at the lead times it saw
   (even snapshot differences from the first snapshot) and at those it never saw (odd),
   and by an autoregressive rollout.

Channels are the velocity ``(u, v)`` computed from the datasets' vorticity (with
``snapshots.four_channels``: ``(ρ, u, v, p) = (1, u, v, 0)``, the layout of Poseidon's
checkpoints), resampled spectrally to the model's resolution. The loss and every error measure
the velocity; with four channels ρ and p are constants of the data, and predictions carry them
as such.

Training is data parallel over all ranks of the job (``mpiexec -n N sciml run`` or
``torchrun``; gloo on CPU, NCCL on GPU): every rank takes its share of each global
batch. Checkpoints every ``output.checkpoint_every`` steps hold the current training's
weights, optimiser, scheduler and RNG state plus every finished result, so
``sciml resume`` continues where the run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field, field_validator, model_validator

from sciml.cases.data import DataSource, check_isotropic, dataset_extent
from sciml.config import NumberExpr, Schema, case_relative_path, cross_key_error
from sciml.solvers import count_parameters

__all__ = ["Config", "run"]


# --------------------------------------------------------------------------- schema
class Data(Schema):
    pretrain: list[DataSource] = Field(default_factory=list, description="pretraining operators (a mixture)")
    train: DataSource = Field(..., description="downstream training trajectories (the first M are used)")
    test: DataSource = Field(..., description="downstream test trajectories")
    validation: Optional[DataSource] = Field(None, description="downstream validation trajectories, for the "
                                             "finetune/baseline validate_every early stopping")


class Snapshots(Schema):
    n: int = Field(21, ge=2, le=10000, description="snapshots per trajectory (dataset frames 0, every, 2 every, ...)")
    every: int = Field(1, ge=1, description="dataset frames per snapshot")
    stride: int = Field(2, ge=1, description="all2all uses snapshots 0, stride, 2 stride, ...")
    t_norm: NumberExpr = Field(20, gt=0, description="lead time = snapshot difference / t_norm")
    four_channels: bool = Field(False, description="(rho, u, v, p) = (1, u, v, 0) instead of (u, v)")


class ModelSpec(Schema):
    preset: Literal["cpu", "T", "B", "L"] = "cpu"
    image_size: Optional[int] = Field(None, ge=1)
    patch_size: Optional[int] = Field(None, ge=1)
    embed_dim: Optional[int] = Field(None, ge=1)
    depths: Optional[list[int]] = None
    num_heads: Optional[list[int]] = None
    window_size: Optional[int] = Field(None, ge=1)
    skip_connections: Optional[list[int]] = None
    time_norm_init: Literal["identity", "poseidon"] = Field(
        "identity", description="start of the time-conditioned norms when pretraining or training from scratch: "
        "identity (plain layer norms) or poseidon (their linear maps initialised like any linear layer, as in "
        "Poseidon's code: norms that start near zero)")
    checkpoint: Optional[Path] = Field(None, description="pretrained.pt of an earlier scot run, or a Poseidon "
                                       "folder (config.json + model.safetensors): skip pretraining")

    @field_validator("checkpoint", mode="after")
    @classmethod
    def _exists(cls, value: Optional[Path], info) -> Optional[Path]:
        value = case_relative_path(value, info)
        if value is None:
            return None
        if value.is_dir():
            if not (value / "config.json").is_file() or not (value / "model.safetensors").is_file():
                raise ValueError(f"{value}: a Poseidon checkpoint folder holds config.json and model.safetensors")
        elif not value.is_file():
            raise ValueError(f"no such checkpoint file: {value}")
        return value

    def overrides(self) -> dict[str, Any]:
        """Fields replacing the preset's (new depths without skip_connections get the default skips)."""
        keys = ("image_size", "patch_size", "embed_dim", "depths", "num_heads", "window_size", "skip_connections",
                "time_norm_init")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if "depths" in out and "skip_connections" not in out:
            out["skip_connections"] = None
        return out

    def config(self, channels: int):
        """The :class:`~sciml.solvers.scot.ScOTConfig` for ``channels`` input and output channels."""
        from sciml.solvers.scot.model import ScOTConfig

        return ScOTConfig.preset(self.preset, in_channels=channels, out_channels=channels, **self.overrides())

    @model_validator(mode="after")
    def _buildable(self) -> "ModelSpec":
        self.config(2)  # ValueError names the inconsistent fields
        return self


def checkpoint_config(path: Path):
    """The :class:`~sciml.solvers.scot.ScOTConfig` of a ``model.checkpoint`` (a ``pretrained.pt`` of a scot
    run, or a Poseidon folder), read without loading its weights; ValueError says what the file is not."""
    import pickle

    import torch

    from sciml.solvers.scot.checkpoint import config_from_poseidon
    from sciml.solvers.scot.model import ScOTConfig

    if path.is_dir():
        try:
            config = config_from_poseidon(json.loads((path / "config.json").read_text(encoding="utf-8")))
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path / 'config.json'}: not a Poseidon configuration ({exc})") from None
        try:
            from safetensors import safe_open

            with safe_open(path / "model.safetensors", "pt") as fh:
                fh.keys()
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{path / 'model.safetensors'}: not a safetensors file ({exc})") from None
        return config
    what = f"{path}: not a pretrained.pt of a scot run"
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise ValueError(f"{what} (not a file of torch.save)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError) as exc:
        raise ValueError(f"{what} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(blob, dict) or not {"config", "model"} <= blob.keys():
        keys = sorted(blob)[:6] if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{what} (it holds {keys}; a run's pretrained.pt holds config and model)")
    try:
        return ScOTConfig(**blob["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} (its config: {exc})") from None


class Optim(Schema):
    steps: int = Field(200, ge=0, le=10**7, description="optimiser steps of each training")
    batch_size: int = Field(16, ge=1, le=65536, description="global batch (all ranks)")
    lr: float = Field(5e-4, gt=0, description="peak learning rate of the body")
    lr_io: Optional[float] = Field(None, gt=0, description="embedding and recovery (default lr)")
    lr_time: Optional[float] = Field(None, gt=0, description="time-conditioned norms (default lr)")
    weight_decay: float = Field(1e-6, ge=0)
    warmup: int = Field(0, ge=0, description="linear warm-up steps before the cosine decay")
    clip: float = Field(5.0, ge=0, description="gradient-norm clip (0: none)")
    augment: bool = Field(False, description="move each training pair by a random symmetry of the data's equation "
                                             "on the grid (translations, reflections, quarter turns its forcing keeps)")


class Pretrain(Optim):
    enabled: bool = True
    steps: int = Field(1000, ge=0, le=10**7)


class EarlyStopping(Schema):
    validate_every: int = Field(0, ge=0, description="steps between validation errors (data.validation); the "
                                                     "weights with the lowest are kept (0: the last weights)")


class FineTune(Optim, EarlyStopping):
    m_values: list[int] = Field([2, 4, 8, 16, 32, 64], min_length=2, description="downstream training sizes M")
    m_star: int = Field(16, ge=1, description="the M at which gains are reported")
    scratch: bool = Field(True, description="also train scOT from scratch")
    lr_scratch: float = Field(5e-4, gt=0, description="peak learning rate of every group when training from scratch")


class Baseline(Optim, EarlyStopping):
    enabled: bool = True
    m_values: list[int] = Field([2, 4, 8, 16, 32, 64, 128, 256], min_length=2)
    modes: int = Field(16, ge=1)
    width: int = Field(32, ge=1)
    n_layers: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)


class Evaluation(Schema):
    rollout_stride: int = Field(2, ge=1, description="snapshots per autoregressive step")
    batch_size: int = Field(16, ge=1)


class Output(Schema):
    checkpoint_every: int = Field(50, ge=1, description="optimiser steps between checkpoints")
    keep_checkpoints: bool = Field(False, description="also keep every checkpoint as checkpoints/step_*.pt")
    plots: bool = True
    paraview: bool = True


class Config(Schema):
    kind: Literal["scot"]
    seed: int = Field(0, ge=0, le=2**63 - 1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    n_test: int = Field(16, ge=1, description="test trajectories evaluated (the first ones)")
    n_validation: int = Field(16, ge=1, description="validation trajectories (the first ones of data.validation)")
    data: Data
    snapshots: Snapshots = Snapshots()
    model: ModelSpec = ModelSpec()
    pretrain: Pretrain = Pretrain()
    finetune: FineTune = FineTune()
    baseline: Baseline = Baseline()
    evaluation: Evaluation = Evaluation()
    output: Output = Output()

    def input_files(self) -> list[tuple[tuple, Path]]:
        """The files of a Poseidon checkpoint folder (for ``sciml resume``'s check that no input changed)."""
        folder = self.model.checkpoint
        if folder is None or not folder.is_dir():
            return []
        return [(("model", "checkpoint"), folder / name) for name in ("config.json", "model.safetensors")]

    def launch_problems(self, world_size: int) -> list[tuple[tuple, str]]:
        """Trainings of this run with a batch that cannot be shared by ``world_size`` ranks (every rank needs
        at least one sample of each batch, the last, partial one of an epoch included)."""
        k = (self.snapshots.n - 1) // self.snapshots.stride
        pairs = (k + 1) * (k + 2) // 2  # all2all pairs per trajectory
        stages = []
        if self.pretrain.enabled and self.model.checkpoint is None:
            n = sum(dataset_extent(src)[0] for src in self.data.pretrain) * pairs
            stages.append(("pretrain", self.pretrain.batch_size, [("", n)]))
        stages.append(("finetune", self.finetune.batch_size, [(f" at M = {m}", m * pairs)
                                                              for m in self.finetune.m_values]))
        if self.baseline.enabled:
            stages.append(("baseline", self.baseline.batch_size, [(f" at M = {m}", m * pairs)
                                                                  for m in self.baseline.m_values]))
        problems = []
        for name, batch, sizes in stages:
            for where, n in sizes:
                smallest = n if batch >= n else (n % batch or batch)
                if smallest < world_size:
                    problems.append(((name, "batch_size"), f"a batch of {smallest} samples (the last of {n}{where} "
                                     f"in batches of {batch}) cannot be shared by {world_size} ranks (at least one "
                                     f"sample each)"))
                    break
        return problems

    @model_validator(mode="after")
    def _checkpoint_fits(self) -> "Config":
        """``model.checkpoint`` is a model of ours or of Poseidon (read without its weights), and runs at the
        resolution of this case."""
        if self.model.checkpoint is None:
            return self
        path = self.model.checkpoint
        try:
            config = checkpoint_config(path)
            resolution = self.model.config(4 if self.snapshots.four_channels else 2).image_size
            if config.image_size != resolution:
                config.check_resolution(resolution, resolution)
        except ValueError as exc:
            raise ValueError(f"model.checkpoint: {exc}") from None
        return self

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        """Every check across keys, each problem reported at its own key (all of them, not the first)."""
        s, ft = self.snapshots, self.finetune
        problems: list[str] = []
        if s.stride > s.n - 1:
            problems.append(f"snapshots.stride: expected at most snapshots.n - 1 = {s.n - 1}, or all2all has "
                            f"the identity pairs only (got {s.stride})")
        if ft.m_star not in ft.m_values:
            problems.append(f"finetune.m_star: must be one of finetune.m_values {ft.m_values} (got {ft.m_star})")
        for name in ("finetune", "baseline"):
            values = getattr(self, name).m_values
            if sorted(set(values)) != list(values) or min(values) < 1:
                problems.append(f"{name}.m_values: expected increasing positive sizes (got {values})")
        if self.baseline.enabled and ft.m_star not in self.baseline.m_values:
            problems.append(f"baseline.m_values: must include finetune.m_star {ft.m_star} "
                            f"(got {self.baseline.m_values})")
        if (s.n - 1) % self.evaluation.rollout_stride:
            problems.append(f"evaluation.rollout_stride: must divide snapshots.n - 1 = {s.n - 1} "
                            f"(got {self.evaluation.rollout_stride})")
        for name in ("finetune", "baseline"):
            if getattr(self, name).validate_every and self.data.validation is None:
                problems.append(f"{name}.validate_every: early stopping needs data.validation (a dataset of "
                                "downstream trajectories)")
        if self.pretrain.enabled and self.model.checkpoint is None and not self.data.pretrain:
            problems.append("data.pretrain: pretraining needs at least one dataset (or give model.checkpoint, "
                            "or set pretrain.enabled: false)")
        checks = [(src, "pretrain.augment", f"data.pretrain.{i}") for i, src in enumerate(self.data.pretrain)
                  if self.pretrain.augment]
        checks += [(self.data.train, f"{name}.augment", "data.train") for name in ("finetune", "baseline")
                   if getattr(self, name).augment]
        for src, key, where in checks:
            try:
                check_isotropic(src, key, where)
            except ValueError as exc:
                problems.append(str(exc))
        needed = (s.n - 1) * s.every
        largest = max(ft.m_values + (self.baseline.m_values if self.baseline.enabled else []))
        sources = [(f"data.pretrain.{i}", d, None) for i, d in enumerate(self.data.pretrain)]
        sources += [("data.train", self.data.train, largest), ("data.test", self.data.test, self.n_test)]
        if self.data.validation is not None:
            sources.append(("data.validation", self.data.validation, self.n_validation))
        for where, src, count in sources:
            gen = src.generate
            if gen is None:  # a dataset file: its header says as much (caught now, not after hours of pretraining)
                try:
                    have, frames = dataset_extent(src)[:2]
                except ValueError as exc:
                    problems.append(f"{where}.path: {src.path}: {exc}")
                    continue
                if frames < needed + 1:
                    problems.append(f"{where}.path: {src.path} holds {frames} frames, snapshots.n={s.n} every="
                                    f"{s.every} need {needed + 1}")
                if count is not None and have < count:
                    problems.append(f"{where}.path: {src.path} holds {have} trajectories, {count} are needed")
                continue
            if gen.time.n_frames < needed:
                problems.append(f"{where}.generate.time.n_frames: needs at least {needed} frames for snapshots.n="
                                f"{s.n}, every={s.every} (got {gen.time.n_frames})")
            if count is not None and gen.n_trajectories < count:
                problems.append(f"{where}.generate.n_trajectories: needs at least {count} (got {gen.n_trajectories})")
        if problems:
            raise cross_key_error(self, problems)
        return self


# --------------------------------------------------------------------------- data
def _fields(path, cfg: Config, n_traj: Optional[int], resolution: int, where: str):
    """Velocity channels ``(n_traj, n, C, R, R)`` of a dataset's first ``n_traj`` trajectories."""
    import torch

    from sciml.cases.data import read_trajectories
    from sciml.operators.spectral import fourier_resample
    from sciml.solvers.scot.data import velocity_channels

    s = cfg.snapshots
    count, frames = dataset_extent(DataSource(path=path))[:2]
    if n_traj is not None and count < n_traj:
        raise ValueError(f"{where}: {path} holds {count} trajectories, {n_traj} are needed")
    if frames < (s.n - 1) * s.every + 1:
        raise ValueError(f"{where}: {path} holds {frames} frames, snapshots.n={s.n} every={s.every} need "
                         f"{(s.n - 1) * s.every + 1}")
    data = read_trajectories(path, dtype=torch.float64,
                             indices=None if n_traj is None else list(range(n_traj)))
    w = data.vorticity[:, : (s.n - 1) * s.every + 1: s.every]
    if w.shape[-1] != resolution:
        w = fourier_resample(w, resolution)
    return velocity_channels(w, data.domain_length, four_channels=s.four_channels).float(), data


def _groups(cfg: Config) -> list[list[int]]:
    """Channel groups of the loss and metric: the velocity, measured together.

    With ``four_channels`` the data's ρ = 1 and p = 0 are constants, not data (incompressible
    flow; the datasets hold no pressure): a relative error of a channel whose target is 0 has
    no scale, so they stay out of the loss and the metrics, and predictions carry them as the
    constants (:func:`_fixed_channels`), as Poseidon masks what its data does not hold.
    """
    return [[1, 2]] if cfg.snapshots.four_channels else [[0, 1]]


def _fixed_channels(cfg: Config) -> dict[int, float]:
    """Channels every prediction carries as known constants (physical units): ρ = 1, p = 0 with ``four_channels``."""
    return {0: 1.0, 3: 0.0} if cfg.snapshots.four_channels else {}


# --------------------------------------------------------------------------- the case
def run(cfg: Config, run) -> dict:
    """Run the case in ``run`` (a :class:`sciml.runs.Run`); returns the metrics (rank 0)."""
    from sciml.cases.data import resolve_dataset
    from sciml.parallel import init_torch_distributed, resolve_device

    comm = run.comm
    paths = {
        "pretrain": [resolve_dataset(d, comm, log=run.log) for d in cfg.data.pretrain]
        if cfg.pretrain.enabled and cfg.model.checkpoint is None else [],
        "train": resolve_dataset(cfg.data.train, comm, log=run.log),
        "test": resolve_dataset(cfg.data.test, comm, log=run.log),
        "validation": None if cfg.data.validation is None else resolve_dataset(cfg.data.validation, comm,
                                                                                log=run.log),
    }
    init_torch_distributed(comm, backend="nccl" if resolve_device(cfg.device, comm).type == "cuda" else "gloo")
    metrics = _Study(cfg, run, paths).run()
    return metrics if comm.is_root else {}


class _Study:
    """The stages of the case, with the checkpoint state they share."""

    def __init__(self, cfg: Config, run, paths: dict):
        import torch

        from sciml.parallel import resolve_device

        self.cfg, self.run_, self.paths = cfg, run, paths
        self.device = resolve_device(cfg.device, run.comm)
        ckpt = run.load_checkpoint() if run.resume else None
        self.state: dict[str, Any] = ckpt["state"] if ckpt is not None else {"results": {}}
        self.step = int(ckpt["step"]) if ckpt is not None else 0
        self.channels = 4 if cfg.snapshots.four_channels else 2
        self.resolution = cfg.model.config(self.channels).image_size
        self.groups = _groups(cfg)
        self._symmetry_groups: dict = {}  # symmetry group of each set of training datasets (augmentation)
        self.released = False  # whether the pretrained model is a released Poseidon one, fine-tuned whole
        torch.manual_seed(cfg.seed)

    def log(self, msg: str) -> None:
        self.run_.log(msg)

    def save(self) -> None:
        self.step += 1
        self.run_.save_checkpoint(self.state, step=self.step, keep=self.cfg.output.keep_checkpoints)

    # -- one training, resumable
    def _train(self, key: str, model, data, opt: Optim, seed: int, lr_groups: dict | None = None,
               validate=None, augment=None):
        """Train ``model``, resumably. With ``validate`` (``model -> error``) and ``opt.validate_every``, the
        error is taken before the first step, every so many steps and at the end, and the weights with the
        lowest are restored (early stopping by the best validation error; step 0 for a pretrained model
        that fine-tuning only made worse).

        Returns ``(trainer, training seconds, validation)``, the last a dict with ``errors`` (every
        ``(step, error)``) and, if any, the kept ``step`` and its ``error``. ``augment``: the
        symmetries training pairs are moved by (:meth:`_symmetries`)."""
        from sciml.solvers.scot.training import Trainer

        trainer = Trainer(model, data, steps=opt.steps, batch_size=opt.batch_size, lr=opt.lr, lr_groups=lr_groups,
                          weight_decay=opt.weight_decay, warmup=opt.warmup, clip=opt.clip, groups=self.groups,
                          seed=seed, augment=augment)
        validate_every = opt.validate_every if validate is not None else 0
        best: dict = {"errors": []}  # every validation (step, error); the lowest's step, error and weights
        current = self.state.get("current")
        if current is not None and current["key"] == key:
            trainer.load_state_dict(current["trainer"])
            best = current.get("best", best)
            self.log(f"{key}: resuming at step {trainer.step}/{trainer.steps}")
        every, t0 = self.cfg.output.checkpoint_every, time.perf_counter()

        def record(step: int) -> None:
            error = float(validate(model))
            best["errors"].append((step, error))
            if "error" not in best or error < best["error"]:
                best.update(step=step, error=error,
                            model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})

        if validate_every and trainer.step == 0 and not best["errors"]:
            record(0)  # the starting weights compete too: a pretrained model may be best before any step

        def checkpoint(step: int, loss: float) -> None:
            if validate_every and (step % validate_every == 0 or step == trainer.steps):
                record(step)
            if step % every == 0 or step == trainer.steps:
                self.state["current"] = {"key": key, "trainer": trainer.state_dict(), "best": best}
                self.save()
                self.log(f"{key}: step {step}/{trainer.steps}, loss {loss:.4g} ({time.perf_counter() - t0:.1f} s)")

        trainer.run(callback=checkpoint)
        if "model" in best:
            model.load_state_dict(best["model"])
            self.log(f"{key}: kept the weights of step {best['step']} (validation error {best['error']:.3f} %)")
        seconds = sum(h["seconds"] for h in trainer.history)
        return trainer, seconds, {k: v for k, v in best.items() if k != "model"}

    def _symmetries(self, stage: str, paths: list, scaler):
        """The symmetries of ``stage``'s training data (None without ``<stage>.augment``): the group of their
        equation on the grid, acting on the velocity channels normalised by ``scaler``."""
        import h5py
        import torch

        from sciml.cases.data import training_symmetries
        from sciml.solvers.scot.data import VelocitySymmetries

        if not getattr(self.cfg, stage).augment:
            return None
        key = tuple(str(p) for p in paths)
        if key not in self._symmetry_groups:
            groups = []
            for path in paths:
                with h5py.File(path, "r") as h5:
                    attrs = dict(h5.attrs)
                groups.append(training_symmetries(attrs, self.resolution, f"{stage}.augment", self.log))
            first = groups[0]
            if any(not (torch.equal(g.ops, first.ops) and torch.equal(g.shifts, first.shifts)) for g in groups[1:]):
                raise ValueError(f"{stage}.augment: the datasets' equations keep different symmetries (their "
                                 "forcings differ); augment each alone or not at all")
            self._symmetry_groups[key] = first
        velocity = (1, 2) if self.cfg.snapshots.four_channels else (0, 1)
        return VelocitySymmetries(self._symmetry_groups[key], velocity, scaler)

    def _lr_groups(self, opt: Optim) -> dict:
        return {"io": opt.lr_io or opt.lr, "time": opt.lr_time or opt.lr}

    def _scot(self, seed: int, config=None):
        """A freshly initialised scOT: of ``config`` (a :class:`ScOTConfig`), else of the ``model:`` block."""
        import torch

        from sciml.solvers.scot import ScOT

        torch.manual_seed(seed)
        return ScOT(config if config is not None else self.cfg.model.config(self.channels)).to(self.device)

    # -- stage 1
    def pretrained(self):
        """The pretrained model and its channel scaler (training it first if needed)."""
        import torch

        from sciml.solvers.scot.data import ChannelScaler, PairData, all2all_pairs

        cfg = self.cfg
        if cfg.model.checkpoint is not None:
            return self._load_pretrained(cfg.model.checkpoint)
        if not cfg.pretrain.enabled:
            return None, None
        target = self.run_.path / "pretrained.pt"
        if "pretrained" in self.state and target.is_file():
            return self._load_pretrained(target)
        fields = [_fields(p, cfg, None, self.resolution, f"data.pretrain.{i}")[0]
                  for i, p in enumerate(self.paths["pretrain"])]
        fields = torch.cat(fields)
        scaler = ChannelScaler.fit(fields)
        pairs = all2all_pairs(cfg.snapshots.n, cfg.snapshots.stride)
        data = PairData(scaler.encode(fields).to(self.device), pairs, cfg.snapshots.t_norm)
        model = self._scot(cfg.seed)
        n_par = count_parameters(model)
        self.log(f"pretraining: scOT '{cfg.model.preset}' ({n_par} parameters) on {len(fields)} trajectories "
                 f"({len(pairs)} pairs each, {len(data)} samples), {cfg.pretrain.steps} steps of batch "
                 f"{cfg.pretrain.batch_size}")
        trainer, seconds, _ = self._train("pretrain", model, data, cfg.pretrain, cfg.seed,
                                       self._lr_groups(cfg.pretrain),
                                       augment=self._symmetries("pretrain", self.paths["pretrain"], scaler))
        if self.run_.comm.is_root:
            from sciml.runs import atomic_write

            with atomic_write(target) as fh:
                torch.save({"config": _config_dict(model.config), "model": model.state_dict(),
                            "scaler": scaler.state_dict(), "channels": self.channels}, fh)
        self.run_.comm.barrier()
        self.state["pretrained"] = {"seconds": seconds, "loss": trainer.history[-1]["loss"] if trainer.history else None,
                                    "samples": len(data)}
        self.state.pop("current", None)
        self.save()
        return model, scaler

    def _load_pretrained(self, path: Path):
        import torch

        from sciml.solvers.scot import ScOT
        from sciml.solvers.scot.data import ChannelScaler
        from sciml.solvers.scot.model import ScOTConfig

        if path.is_dir():  # a released Poseidon model: no scaler of ours (see _fit_scaler)
            from sciml.solvers.scot.checkpoint import load_poseidon

            model = load_poseidon(path)
            blob = {"config": _config_dict(model.config), "scaler": None}
            self.log(f"pretrained model: Poseidon checkpoint {path} ({count_parameters(model)} "
                     "parameters)")
        else:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            model = ScOT(ScOTConfig(**blob["config"]))
            model.load_state_dict(blob["model"])
        if model.config.image_size != self.resolution:
            model.config.check_resolution(self.resolution, self.resolution)
            self.log(f"note: {path} was trained at {model.config.image_size}², it runs here at {self.resolution}² "
                     f"(the model's image_size here, the data resampled to it: its windows cover other token "
                     f"offsets, so its position biases and window shifts differ from its training; "
                     f"model.image_size: {model.config.image_size} runs it at its own, as Poseidon does)")
        if blob["config"]["in_channels"] != self.channels:
            model.reset_io(self.channels, self.channels)
            self.log(f"pretrained model {path}: {blob['config']['in_channels']} channels, embedding and recovery "
                     f"replaced for {self.channels}")
            scaler = None
        else:
            scaler = None if blob["scaler"] is None else ChannelScaler.from_state_dict(blob["scaler"])
            self.released = path.is_dir()
        return model.to(self.device), scaler

    def _fit_scaler(self, train):
        r"""The channel scaler fitted on downstream training fields.

        A released Poseidon model fine-tuned whole on four channels gets its pretraining's fixed
        normalisation for the constant channels ρ and p (:data:`POSEIDON_FLUID_MEAN`, ``_STD``): it
        sees ρ = 1 as the :math:`(1 - 0.8)/0.31` it was trained on, not the 0 a fit to a constant
        gives. The velocity keeps the fit (unit variance, as Poseidon's normalised data had): these
        flows' speeds differ from Poseidon's datasets'.
        """
        from sciml.solvers.scot.checkpoint import POSEIDON_FLUID_MEAN, POSEIDON_FLUID_STD
        from sciml.solvers.scot.data import ChannelScaler

        scaler = ChannelScaler.fit(train)
        if self.released and self.channels == 4:
            for c in _fixed_channels(self.cfg):
                scaler.mean[c], scaler.std[c] = POSEIDON_FLUID_MEAN[c], POSEIDON_FLUID_STD[c]
        return scaler

    def _downstream_model(self, name: str, pre_model, pre_scaler, train):
        """A fresh model of the study, its channel scaler and its optimiser settings."""
        import torch

        from sciml.solvers.scot.baseline import TimeFNO
        from sciml.solvers.scot.data import ChannelScaler

        cfg = self.cfg
        if name == "scot_pretrained":
            return _copy(pre_model), pre_scaler or self._fit_scaler(train), cfg.finetune
        if name == "scot_scratch":
            f = cfg.finetune
            opt = f.model_copy(update={"lr": f.lr_scratch, "lr_io": f.lr_scratch, "lr_time": f.lr_scratch})
            # the pretrained model's own architecture (a loaded checkpoint's may differ from the model: block),
            # started as the case says
            config = (dataclasses.replace(pre_model.config, time_norm_init=cfg.model.time_norm_init)
                      if pre_model is not None else None)
            return self._scot(cfg.seed + 1, config), ChannelScaler.fit(train), opt
        b = cfg.baseline
        torch.manual_seed(cfg.seed + 2)
        return TimeFNO(self.channels, b.modes, b.width, b.n_layers).to(self.device), ChannelScaler.fit(train), b

    # -- stage 2 and 3
    def run(self) -> dict:
        from sciml.solvers.scot.data import ChannelScaler, PairData, all2all_pairs

        cfg, s = self.cfg, self.cfg.snapshots
        pre_model, pre_scaler = self.pretrained()
        largest = max(cfg.finetune.m_values + (cfg.baseline.m_values if cfg.baseline.enabled else []))
        train, _ = _fields(self.paths["train"], cfg, largest, self.resolution, "data.train")
        test, test_data = _fields(self.paths["test"], cfg, cfg.n_test, self.resolution, "data.test")
        validation = None
        if self.paths.get("validation") is not None:
            validation, _ = _fields(self.paths["validation"], cfg, cfg.n_validation, self.resolution,
                                    "data.validation")
        pairs = all2all_pairs(s.n, s.stride)
        self.log(f"downstream: {len(train)} training and {len(test)} test trajectories at {self.resolution}², "
                 f"{s.n} snapshots, {len(pairs)} all2all pairs per trajectory")
        results: dict = self.state["results"]
        runs: list[tuple[str, int]] = []
        if pre_model is not None:
            runs += [("scot_pretrained", m) for m in cfg.finetune.m_values]
        if cfg.finetune.scratch:
            runs += [("scot_scratch", m) for m in cfg.finetune.m_values]
        if cfg.baseline.enabled:
            runs += [("fno", m) for m in cfg.baseline.m_values]
        kept: dict = self.state.setdefault("kept", {})
        for name, m in runs:
            key = f"{name}_M{m}"
            if key in results:
                continue
            model, scaler, opt = self._downstream_model(name, pre_model, pre_scaler, train[:m])
            data = PairData(scaler.encode(train[:m]).to(self.device), pairs, s.t_norm)
            groups = self._lr_groups(opt) if name.startswith("scot") else None
            stage = "finetune" if name.startswith("scot") else "baseline"
            validate = None
            if validation is not None:
                def validate(net, scaler=scaler):  # median rel. L1 (%) at the final time, as the study's metric
                    error = _evaluate(_Scaled(net, scaler, _fixed_channels(cfg)), validation, [(0, s.n - 1)],
                                      s.t_norm, self.groups, cfg.evaluation.batch_size)
                    return float(np.median(error))
            trainer, seconds, checked = self._train(key, model, data, opt, cfg.seed + m, groups, validate,
                                                    self._symmetries(stage, [self.paths["train"]], scaler))
            final = _evaluate(_Scaled(model, scaler, _fixed_channels(cfg)), test, [(0, s.n - 1)], s.t_norm,
                              self.groups, cfg.evaluation.batch_size)
            results[key] = {"model": name, "M": m, "rel_l1_final": float(np.median(final)), "train_s": seconds,
                            "steps": trainer.step, "parameters": count_parameters(model)}
            if checked["errors"]:
                results[key].update(best_step=checked["step"], validation_errors=checked["errors"])
            self.log(f"{key}: median rel. L1 at the final time {results[key]['rel_l1_final']:.3f} % "
                     f"({seconds:.1f} s training)")
            if m == cfg.finetune.m_star:  # kept for the lead-time study and the fields
                kept[name] = {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                              "scaler": scaler.state_dict()}
            self.state.pop("current", None)
            self.save()
        keep = {}
        for name, blob in kept.items():
            model, _, _ = self._downstream_model(name, pre_model, pre_scaler, train[:1])
            model.load_state_dict(blob["model"])
            keep[name] = _Scaled(model, ChannelScaler.from_state_dict(blob["scaler"]), _fixed_channels(cfg))
        metrics = self._summary(results, keep, test, test_data)
        return metrics

    def _summary(self, results: dict, keep: dict, test, test_data) -> dict:
        cfg, s = self.cfg, self.cfg.snapshots
        ms = cfg.finetune.m_star
        metrics: dict[str, Any] = {"m_star": ms, "resolution": self.resolution, "n_test": len(test),
                                   "results": sorted(results.values(), key=lambda r: (r["model"], r["M"]))}
        fits = {}
        for name in ("scot_pretrained", "scot_scratch", "fno"):
            rows = sorted((r for r in results.values() if r["model"] == name), key=lambda r: r["M"])
            if len(rows) < 2:
                continue
            fits[name] = fit_power_law([r["M"] for r in rows], [r["rel_l1_final"] for r in rows])
            metrics[f"median_rel_l1_{name}"] = next(r["rel_l1_final"] for r in rows if r["M"] == ms) \
                if any(r["M"] == ms for r in rows) else None
            metrics[f"fit_{name}"] = {"C": fits[name][0], "alpha": fits[name][1]}
            metrics[f"{name}_parameters"] = rows[0]["parameters"]
        metrics["median_rel_l1_scot_pretrained"] = metrics.get("median_rel_l1_scot_pretrained")
        if "fno" in fits and "scot_pretrained" in fits:
            gains = gains_at(fits["scot_pretrained"], fits["fno"], ms, cfg.baseline.m_values)
            metrics.update(gains)
            target = metrics.get("median_rel_l1_scot_pretrained")
            if target is not None:
                fno = {r["M"]: r["rel_l1_final"] for r in results.values() if r["model"] == "fno"}
                eg, bound = measured_efficiency_gain(target, fno, ms)
                metrics["efficiency_gain_measured"] = eg
                metrics["efficiency_gain_measured_is_lower_bound"] = bound
        if "scot_scratch" in fits and "fno" in fits:
            g = gains_at(fits["scot_scratch"], fits["fno"], ms, cfg.baseline.m_values)
            metrics["accuracy_gain_scratch"], metrics["efficiency_gain_scratch"] = g["accuracy_gain"], g["efficiency_gain"]
        model = keep.get("scot_pretrained") or keep.get("scot_scratch")
        if model is not None:
            seen, unseen = lead_time_pairs(s.n, s.stride)
            e_seen = _evaluate(model, test, seen, s.t_norm, self.groups, cfg.evaluation.batch_size)
            metrics["median_rel_l1_seen_lead_times"] = float(np.median(e_seen))
            if unseen:
                e_unseen = _evaluate(model, test, unseen, s.t_norm, self.groups, cfg.evaluation.batch_size)
                metrics["median_rel_l1_unseen_lead_times"] = float(np.median(e_unseen))
            metrics["median_rel_l1_rollout"] = float(np.median(_rollout_error(model, test, cfg, self.groups)))
            metrics["lead_time_model"] = "scot_pretrained" if "scot_pretrained" in keep else "scot_scratch"
        self.log(_report(metrics))
        if self.run_.comm.is_root:
            if cfg.output.plots:
                _plot(self.run_, results, fits, ms)
            if cfg.output.paraview and keep:
                _paraview(self.run_, keep, test, test_data, cfg)
        return metrics


def _config_dict(config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


def _copy(model):
    import copy

    return copy.deepcopy(model)


class _Scaled:
    """``(x, t) -> y`` in physical units around a model trained on normalised fields; the ``fixed``
    channels (index -> value) of the output are set to their known constants."""

    def __init__(self, model, scaler, fixed: dict[int, float] | None = None):
        self.model, self.scaler, self.fixed = model, scaler, dict(fixed or {})

    def __call__(self, x, t):
        self.model.eval()
        y = self.scaler.decode(self.model(self.scaler.encode(x), t))
        for channel, value in self.fixed.items():
            y[:, channel] = value
        return y


def _evaluate(model, fields, pairs, t_norm, groups, batch_size) -> np.ndarray:
    """Relative L1 (%) of direct predictions, ``(n_traj, len(pairs))``."""
    import torch

    from sciml.solvers.scot.data import relative_l1

    out = np.empty((fields.shape[0], len(pairs)))
    dev = next(model.model.parameters()).device
    with torch.no_grad():
        for p, (i, j) in enumerate(pairs):
            for a in range(0, len(fields), batch_size):
                x, y = fields[a: a + batch_size, i].to(dev), fields[a: a + batch_size, j].to(dev)
                t = torch.full((len(x),), (j - i) / float(t_norm), device=dev)
                out[a: a + len(x), p] = 100.0 * relative_l1(model(x, t), y, groups).cpu().numpy()
    return out


def _rollout_error(model, fields, cfg: Config, groups) -> np.ndarray:
    import torch

    from sciml.solvers.scot.data import relative_l1

    s, k = cfg.snapshots, cfg.evaluation.rollout_stride
    dev = next(model.model.parameters()).device
    x = fields[:, 0].to(dev)
    with torch.no_grad():
        for _ in range((s.n - 1) // k):
            x = torch.cat([model(x[a: a + cfg.evaluation.batch_size],
                                 torch.full((len(x[a: a + cfg.evaluation.batch_size]),), k / float(s.t_norm),
                                            device=dev))
                           for a in range(0, len(x), cfg.evaluation.batch_size)])
        return 100.0 * relative_l1(x, fields[:, -1].to(dev), groups).cpu().numpy()


def fit_power_law(m_values, errors) -> tuple[float, float]:
    r"""Least-squares fit of :math:`E(M) = C M^{-\alpha}` in log–log: returns ``(C, alpha)``."""
    x, y = np.log(np.asarray(m_values, float)), np.log(np.asarray(errors, float))
    slope, intercept = np.polyfit(x, y, 1)
    return float(math.exp(intercept)), float(-slope)


def lead_time_pairs(n: int, stride: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Evaluation pairs ``(0, j)`` from the initial snapshot, split by whether training saw the lead time.

    Training takes the all2all pairs of snapshots ``0, stride, 2 stride, ...``: their lead times
    are the multiples of ``stride`` (seen); every other ``j < n`` (the odd ones for stride 2) is
    a lead time no training pair has (unseen: continuous time).
    """
    seen = [(0, j) for j in range(stride, n, stride)]
    unseen = [(0, j) for j in range(1, n) if j % stride]
    return seen, unseen


def gains_at(scot: tuple[float, float], fno: tuple[float, float], m_star: int, fno_m_values) -> dict:
    r"""Accuracy and efficiency gains at :math:`M^*` from fitted ``(C, alpha)`` curves.

    :math:`AG = E_\mathrm{FNO}(M^*)/E_\mathrm{scOT}(M^*)`;
    :math:`EG = M_\mathrm{FNO}(E_\mathrm{scOT}(M^*))/M^*` with
    :math:`M_\mathrm{FNO}(e) = (C_\mathrm{FNO}/e)^{1/\alpha_\mathrm{FNO}}` (infinite when the FNO's
    fitted error does not decrease, or so slowly that the size overflows a float: then ``efficiency_gain_unbounded`` is true, and metrics.json
    holds null). ``efficiency_gain_extrapolated`` says whether that M lies beyond the largest M
    the FNO was trained with.
    """
    c_s, a_s = scot
    c_f, a_f = fno
    e_scot, e_fno = c_s * m_star ** -a_s, c_f * m_star ** -a_f
    if a_f > 0 and c_f > 0 and c_s > 0:  # in logs: E_scOT(M*) may underflow where its log does not
        log_m = (math.log(c_f) - math.log(c_s) + a_s * math.log(m_star)) / a_f
    else:
        log_m = math.inf
    m_fno = math.exp(log_m) if log_m < math.log(sys.float_info.max) else math.inf  # a slow fit: past any float
    return {"accuracy_gain": e_fno / e_scot, "efficiency_gain": m_fno / m_star,
            "efficiency_gain_unbounded": math.isinf(m_fno),
            "efficiency_gain_extrapolated": bool(m_fno > max(fno_m_values))}


def measured_efficiency_gain(target: float, baseline: dict[int, float], m_star: int) -> tuple[float, bool]:
    r"""The efficiency gain read off the measured baseline errors, no fitted curve.

    :math:`M_\mathrm{FNO}` is where the measured errors ``baseline`` ``{M: E}`` first fall to
    ``target`` (log–log linear between the two bracketing sizes; the smallest size if it is
    already there). Returns ``(M_FNO / m_star, False)``, or ``(max M / m_star, True)`` when no
    measured size reaches the target: then the gain is only known to exceed that bound.
    """
    ms = sorted(baseline)
    if not ms:
        raise ValueError("measured_efficiency_gain: no baseline errors")
    if baseline[ms[0]] <= target:
        return ms[0] / m_star, False
    for lo, hi in zip(ms, ms[1:]):
        if baseline[hi] <= target:
            e_lo, e_hi = math.log(baseline[lo]), math.log(baseline[hi])
            w = (e_lo - math.log(target)) / (e_lo - e_hi) if e_lo != e_hi else 1.0
            return math.exp(math.log(lo) + w * (math.log(hi) - math.log(lo))) / m_star, False
    return ms[-1] / m_star, True


def _report(m: dict) -> str:
    def f(key):
        v = m.get(key)
        return "n/a" if v is None else f"{v:.4g}"

    return (f"at M* = {m['m_star']}: median rel. L1 (%) scOT pretrained {f('median_rel_l1_scot_pretrained')}, "
            f"scratch {f('median_rel_l1_scot_scratch')}, FNO {f('median_rel_l1_fno')}; AG {f('accuracy_gain')}, "
            f"EG {f('efficiency_gain')}; lead times seen {f('median_rel_l1_seen_lead_times')} / unseen "
            f"{f('median_rel_l1_unseen_lead_times')}; rollout {f('median_rel_l1_rollout')}")


def _plot(run, results: dict, fits: dict, m_star: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=120)
    labels = {"scot_pretrained": "scOT pretrained", "scot_scratch": "scOT from scratch", "fno": "FNO"}
    for i, (name, label) in enumerate(labels.items()):
        rows = sorted((r for r in results.values() if r["model"] == name), key=lambda r: r["M"])
        if not rows:
            continue
        ms = np.array([r["M"] for r in rows], float)
        ax.loglog(ms, [r["rel_l1_final"] for r in rows], "o", color=f"C{i}", label=label)
        if name in fits:
            c, a = fits[name]
            grid = np.geomspace(ms.min(), ms.max(), 50)
            ax.loglog(grid, c * grid**-a, "-", color=f"C{i}", alpha=0.6, label=f"  fit M^-{a:.2f}")
    ax.axvline(m_star, color="k", ls=":", lw=0.8)
    ax.set_xlabel("downstream training trajectories M")
    ax.set_ylabel("median relative L1 error (%) at the final time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run.plots_dir / "sample_efficiency.png")
    plt.close(fig)


def _paraview(run, keep: dict, test, test_data, cfg: Config) -> None:
    """Test trajectory 0 at every snapshot: truth and each M* model's direct prediction from snapshot 0."""
    import torch

    from sciml.meshes.paraview import ImageGrid, VTKFile

    s = cfg.snapshots
    n, length = test.shape[-1], test_data.domain_length
    dx = length / n
    image = ImageGrid((n, n), spacing=(dx, dx), origin=(0.0, 0.0))
    vtk = VTKFile(run.path / "fields.pvd")
    frame_dt = float(test_data.attrs.get("frame_dt", 1.0)) * s.every
    first = 1 if s.four_channels else 0
    x0 = test[:1, 0]
    for j in range(s.n):
        fields = {"velocity_truth": _vector(test[0, j, first: first + 2])}
        with torch.no_grad():
            for name, model in keep.items():
                dev = next(model.model.parameters()).device
                t = torch.full((1,), j / float(s.t_norm), device=dev)
                pred = model(x0.to(dev), t)[0].cpu()
                fields[f"velocity_{name}"] = _vector(pred[first: first + 2])
        vtk.write(j * frame_dt, image, **fields)


def _vector(uv):
    """``(2, N, N)`` → ``(N, N, 3)`` point vectors for ParaView."""
    u = uv.float().numpy()
    return np.stack([u[0], u[1]], axis=-1)
