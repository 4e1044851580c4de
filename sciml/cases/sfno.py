"""Spatiotemporal FNO with residual fine-tuning (Spectral-Refiner) against an FNO3d baseline.

Case kind ``sfno``. Reads (or generates and caches) a training and a test set of
Navier–Stokes trajectories, trains the SFNO at a coarse grid on windows of
``n_in`` → ``n_out`` frames, trains neuraloperator's FNO3d on the same data for the
same epochs, evaluates both, then fine-tunes the SFNO's output layer per test
trajectory on the H⁻¹ norm of the Navier–Stokes residual at the generation grid with
frames as finely spaced as the test set's, and reports true errors, residuals and
timings (DESIGN.md, "Spatiotemporal FNO + Sobolev fine-tuning"). The estimator needs
no tuning, so its rank correlation with the true error (``estimator_error_spearman``)
is taken over all ``n_test`` test trajectories; the fine-tuning metrics over the first
``finetune.n_trajectories``.

Time alignment: the model's frames are ``window.frame_dt`` apart; a dataset whose
frames are ``frame_dt`` apart is read at stride ``window.frame_dt / frame_dt``. The
test set is stored finely (stride ``m``, e.g. 8): fine-tuning asks the SFNO for
``m * n_out`` frames, whose frame ``m j`` is target ``j``; only the fine frames up to
the last target (``m (n_out - 1) + 1`` of them) enter the residual and the errors.
The fine-tuning frames thus take the test set's stored spacing (``finetune_frame_dt``). The
estimator sees the error only where the true trajectory's residual is at most a tenth of the
prediction's (DESIGN.md): the log warns before fine-tuning McWilliams data stored coarser
than 0.025 or on a grid below 128², and after fine-tuning any data whose measured ratio
(``residual_floor_ratio``, median over the fine-tuned trajectories) exceeds 0.1.

Training runs on rank 0 (data generation uses every rank); checkpoints after every
epoch and every fine-tuned trajectory let ``sciml resume`` continue where it stopped.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import Field, model_validator

from sciml.cases.data import DataSource, check_isotropic, dataset_extent, equation_from_attrs, training_symmetries
from sciml.config import NumberExpr, Schema, validation_error

__all__ = ["Config", "run", "build_sfno", "output_modes_of", "zero_shot_key"]


# --------------------------------------------------------------------------- schema
#: Initial-condition generators whose distribution is invariant under every grid rotation, reflection
#: and translation (isotropic spectra with random phases).
class Data(Schema):
    train: DataSource = Field(..., description="training trajectories")
    test: DataSource = Field(..., description="test trajectories, stored finely enough for the residual")


class Window(Schema):
    frame_dt: NumberExpr = Field(0.2, gt=0, description="spacing of the model's input and output frames")
    start: int = Field(0, ge=0, description="first input frame (in model frames from the dataset's start)")
    n_in: int = Field(10, ge=1, le=1000)
    n_out: int = Field(20, ge=2, le=1000)


class Model(Schema):
    modes: tuple[int, int, int] = Field((4, 12, 12), description="largest wavenumbers (t, x, y) of the body")
    width: int = Field(16, ge=1, le=1024)
    n_layers: int = Field(4, ge=0, le=64)
    time_padding: int = Field(4, ge=0, le=1000, description="frames of temporal padding in the latent period")
    block_mlp_channels: int = Field(0, ge=0, le=4096, description="hidden channels of a pointwise MLP after each "
                                    "body spectral convolution (0: none)")
    block: Literal["refiner", "neuralop"] = Field(
        "refiner", description="body block: the authors' sigma(W x + MLP(K x)), or neuraloperator's "
                               "sigma(MLP(sigma(K x + W x)) + g x) with a gated skip around the block (needs "
                               "block_mlp_channels >= 1)")
    output_init: Literal["identity", "random"] = Field(
        "identity", description="initial weights of the output spectral layer: 1 (the truncation to its modes), or "
                                "random per mode (the authors' choice)")
    conserve_mean: bool = Field(True, description="keep the predicted vorticity's spatial mean at the last input "
                                                  "frame's (it is zero for any periodic velocity); false: the "
                                                  "authors' model, whose mean may drift")
    input_path: Literal["temporal", "frames"] = Field(
        "temporal", description="how the input frames reach the body: the latent temporal layer (any number of "
                                "input frames), or every input frame as a channel at every latent step")
    input_skip: bool = Field(False, description="add a pointwise linear map of the lifted last input frame to the "
                                                "latent temporal layer's output at every latent step")
    output_modes: Union[tuple[int, int, int], Literal["full"], None] = Field(
        None, description="modes (t, x, y) of the output layer: null = the body's modes (as the authors' model), "
                          "'full' = every mode below the Nyquist frequencies of the latent period and the "
                          "training grid (time modes above the body's are pinned only at the training frames "
                          "and ring between them, where the estimator's finer frames fall)")

    @model_validator(mode="after")
    def _non_negative(self) -> "Model":
        for name in ("modes", "output_modes"):
            value = getattr(self, name)
            if isinstance(value, tuple) and min(value) < 0:
                raise ValueError(f"{name}: must be non-negative (got {list(value)})")
        if self.block == "neuralop" and self.block_mlp_channels < 1:
            raise ValueError("block_mlp_channels: block 'neuralop' needs at least 1 (neuraloperator uses half the width)")
        if self.input_skip and self.input_path == "frames":
            raise ValueError("input_skip: needs input_path 'temporal' (with 'frames' every latent step sees every "
                             "input frame)")
        return self


class Baseline(Schema):
    enabled: bool = True
    width: Optional[int] = Field(None, ge=1, le=1024, description="default: parameter count matched to the SFNO")
    n_layers: int = Field(4, ge=1, le=64)
    time_padding: float = Field(0.25, ge=0, le=2.0, description="fraction of the time axis padded on each side")


class Training(Schema):
    resolution: int = Field(64, ge=8, le=8192, description="training grid (datasets are Fourier-resampled)")
    epochs: int = Field(20, ge=1, le=100000)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    n_train: Optional[int] = Field(None, ge=1, description="use only the first n_train training trajectories")
    augment: bool = Field(False, description="map each training window by a random symmetry of the equation "
                          "(grid rotations, reflections, translations that keep the forcing); needs initial "
                          "conditions from a distribution they keep (gaussian_random_field, mcwilliams, sine_sum, "
                          "piecewise_constant)")

    @model_validator(mode="after")
    def _even(self) -> "Training":
        if self.resolution % 2:
            raise ValueError(f"resolution: must be even (got {self.resolution})")
        return self


class FineTune(Schema):
    enabled: bool = True
    n_trajectories: int = Field(16, ge=1, description="test trajectories fine-tuned (the first ones)")
    steps: int = Field(100, ge=0, le=100000, description="optimiser iterations (L-BFGS: loss evaluations)")
    optimizer: Literal["lbfgs", "adam"] = Field(
        "lbfgs", description="lbfgs: preconditioned, every output coefficient; adam: the paper's optimiser, on the "
                             "layer's weights")
    lr: float = Field(1e-2, gt=0, description="Adam's learning rate")
    order: int = Field(3, ge=1, le=6, description="BDF order of the residual's time differences")
    alpha: NumberExpr = Field(10**-1.5, gt=0, description="shift of the H^-1 symbol")
    latent_refine: int = Field(4, ge=1, le=64, description="latent period sampled this many times more finely")
    dtype: Literal["float32", "float64"] = "float64"


class Output(Schema):
    paraview_trajectories: int = Field(1, ge=0, le=16, description="fine-tuned trajectories written to fields.pvd")
    plots: bool = True
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    keep_checkpoints: bool = Field(False, description="also keep checkpoints/step_*.pt of every checkpoint")


class Config(Schema):
    kind: Literal["sfno"]
    seed: int = Field(0, ge=0, le=2**63 - 1)
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="where training and fine-tuning run")
    n_test: int = Field(16, ge=1, description="test trajectories evaluated (the first ones)")
    data: Data
    window: Window = Window()
    model: Model = Model()
    baseline: Baseline = Baseline()
    training: Training = Training()
    finetune: FineTune = FineTune()
    output: Output = Output()

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        """Every size the run reads must be there: checked against a generated dataset's configuration, and
        against the file of a ``path`` dataset (its header only), before any data is generated or read."""
        w, tr = self.window, self.training
        problems: list[tuple[tuple, str, Any]] = []
        test_grid = None  # the zero-shot and fine-tuning grid
        for name in ("train", "test"):
            source = getattr(self.data, name)
            gen = source.generate
            try:
                n_traj, n_stored, n, frame_dt = _extent(source)
            except ValueError as exc:
                problems.append((("data", name, "path"), str(exc), str(source.path)))
                continue
            if name == "test":
                test_grid = n
            ratio = w.frame_dt / frame_dt
            stride = round(ratio)
            if stride < 1 or abs(ratio - stride) > 1e-6 * ratio:
                problems.append(
                    (("data", name, "generate", "time", "frame_dt"), f"window.frame_dt {w.frame_dt:g} must be a "
                     "whole multiple of the dataset's frame_dt", frame_dt) if gen is not None else
                    (("window", "frame_dt"), f"must be a whole multiple of the dataset's frame_dt {frame_dt:g} "
                     f"(data.{name}.path)", w.frame_dt))
                continue
            if name == "test" and self.finetune.enabled and self.finetune.order > stride * w.n_out:
                problems.append((("finetune", "order"), f"must be at most the {stride * w.n_out} frames a "
                                 f"fine-tuning predicts (window.n_out {w.n_out} x the test set's {stride} stored "
                                 f"frames per window frame)", self.finetune.order))
            last = (w.start + w.n_in + w.n_out - 1) * stride  # index of the window's last stored frame
            window = f"window.start={w.start}, n_in={w.n_in}, n_out={w.n_out} at stride {stride}"
            if last >= n_stored:
                problems.append(
                    (("data", name, "generate", "time", "n_frames"), f"needs at least {last} frames for {window}",
                     gen.time.n_frames) if gen is not None else
                    (("window", "n_out"), f"{window} needs {last + 1} frames, data.{name}.path holds {n_stored}",
                     w.n_out))
            if n < tr.resolution:
                problems.append(
                    (("data", name, "generate", "grid", "n"), f"must be at least training.resolution "
                     f"{tr.resolution}", n) if gen is not None else
                    (("training", "resolution"), f"must be at most the grid {n} of data.{name}.path",
                     tr.resolution))
            needed = {"train": ("training.n_train", tr.n_train), "test": ("n_test", self.n_test)}[name]
            if needed[1] is not None and needed[1] > n_traj:
                problems.append(
                    (("data", name, "generate", "n_trajectories"), f"must be at least {needed[0]} {needed[1]}",
                     n_traj) if gen is not None else
                    (tuple(needed[0].split(".")), f"must be at most the {n_traj} trajectories of "
                     f"data.{name}.path", needed[1]))
        if w.n_in == 1 and self.model.input_path == "temporal":
            problems.append((("window", "n_in"), "the temporal input path needs at least 2 input frames (from one "
                             "frame its latent field is constant in time and the SFNO can only predict persistence); "
                             "use model.input_path: frames", w.n_in))
        from sciml.solvers.sfno.layers import max_mode

        top = max_mode(tr.resolution)
        for name in ("modes", "output_modes"):  # (clipped alike at every grid where no finer one is used)
            value = getattr(self.model, name)
            if test_grid is not None and test_grid > tr.resolution and isinstance(value, tuple) and \
                    max(value[1:]) > top:
                problems.append((("model", name), f"space modes must be at most {top}, the largest below the "
                                 f"Nyquist frequency of training.resolution {tr.resolution} (weights above it "
                                 "never see training data but act at the zero-shot resolution)", list(value)))
        if self.finetune.enabled and self.finetune.n_trajectories > self.n_test:
            problems.append((("finetune", "n_trajectories"), f"must be at most n_test {self.n_test}",
                             self.finetune.n_trajectories))
        if self.training.augment:
            try:
                check_isotropic(self.data.train, "training.augment", "data.train")
            except ValueError as exc:
                problems.append((("training", "augment"), str(exc).removeprefix("training.augment: "), True))
        if problems:
            raise validation_error("Config", problems)
        return self


def _extent(source: DataSource) -> tuple[int, int, int, float]:
    """:func:`sciml.cases.data.dataset_extent`, with the frame spacing required (windows are cut by it)."""
    extent = dataset_extent(source)
    if not extent[3] > 0:
        raise ValueError("the dataset has no positive frame_dt attribute (the spacing of its frames)")
    return extent


def output_modes_of(model: Model, n_out: int, resolution: int) -> tuple[int, int, int] | None:
    """The SFNO's ``output_modes`` argument for ``model.output_modes`` (None: the body's)."""
    from sciml.solvers.sfno import full_output_modes

    if model.output_modes == "full":
        return full_output_modes(n_out + model.time_padding, resolution)
    return model.output_modes


def build_sfno(cfg: Config, scale: float = 1.0):
    """The case's SFNO, untrained (``scale``: the vorticity scale, e.g. the training data's rms)."""
    from sciml.solvers.sfno import SFNO

    m, w = cfg.model, cfg.window
    return SFNO(modes=m.modes, width=m.width, n_layers=m.n_layers, out_steps=w.n_out, time_padding=m.time_padding,
                output_modes=output_modes_of(m, w.n_out, cfg.training.resolution),
                block_mlp_channels=m.block_mlp_channels, block=m.block, input_skip=m.input_skip,
                output_init=m.output_init, conserve_mean=m.conserve_mean,
                in_steps=w.n_in if m.input_path == "frames" else None, scale=scale)


def zero_shot_key(n_gen: int, resolution: int) -> str | None:
    """The metric of the zero-shot error at the generation grid ``n_gen``, named by its ratio ``r`` to the
    training grid: ``rel_l2_zero_shot_{r}x`` (``2x`` for 128² over 64², ``4x`` for 256²); None when the two
    grids are the same (the error at the training grid is then that number)."""
    if n_gen <= resolution:
        return None
    return f"rel_l2_zero_shot_{n_gen / resolution:g}x"


def _stride(model_dt: float, data_dt: float, what: str) -> int:
    ratio = model_dt / data_dt
    stride = round(ratio)
    if stride < 1 or abs(ratio - stride) > 1e-6 * ratio:
        raise ValueError(f"{what}: window.frame_dt {model_dt:g} must be a whole multiple of the dataset's "
                         f"frame_dt {data_dt:g}")
    return stride


# --------------------------------------------------------------------------- data
def _load(path, cfg: Config, what: str, n_traj: int | None, resolution: int | None, dtype, first_traj: int = 0):
    """Frames ``start .. start + n_in + n_out - 1`` (model spacing) of trajectories ``first_traj .. n_traj - 1``
    (default: the first ``n_traj``).

    Returns ``(frames (n, n_in + n_out, n, n), data)`` with ``data`` the
    :class:`~sciml.cases.data.Trajectories` header (its vorticity dropped); resampled to
    ``resolution`` when given. Read in chunks to bound memory.
    """
    import h5py
    import torch

    from sciml.cases.data import read_trajectories
    from sciml.operators.spectral import fourier_resample

    with h5py.File(path, "r") as h5:
        total = h5["vorticity"].shape[0]
    n_traj = total if n_traj is None else n_traj
    if n_traj > total:
        raise ValueError(f"{what}: {path} holds {total} trajectories, {n_traj} are needed")
    w = cfg.window
    parts, head = [], None
    for lo in range(first_traj, n_traj, 16):
        data = read_trajectories(path, dtype=dtype, indices=list(range(lo, min(lo + 16, n_traj))))
        stride = _stride(w.frame_dt, float(data.attrs["frame_dt"]), what)
        first, last = w.start * stride, (w.start + w.n_in + w.n_out - 1) * stride
        if last >= data.vorticity.shape[1]:
            raise ValueError(f"{what}: {path} has {data.vorticity.shape[1]} frames, the window needs {last + 1}")
        frames = data.vorticity[:, first: last + 1: stride]
        if resolution is not None and resolution != frames.shape[-1]:
            frames = fourier_resample(frames, resolution)
        parts.append(frames.contiguous())
        data.vorticity = None
        head = data
    return torch.cat(parts), head


def _load_fine(path, cfg: Config, n_traj: int, dtype, first_traj: int = 0):
    """The test set's own frames from the last input to the last target, ``(n, m n_out + 1, N, N)``, and ``m``,
    for trajectories ``first_traj .. n_traj - 1``."""
    from sciml.cases.data import read_trajectories

    data = read_trajectories(path, dtype=dtype, indices=list(range(first_traj, n_traj)))
    w = cfg.window
    m = _stride(w.frame_dt, float(data.attrs["frame_dt"]), "data.test")
    first = (w.start + w.n_in - 1) * m
    return data.vorticity[:, first: first + m * w.n_out + 1].contiguous(), m, data


# --------------------------------------------------------------------------- the case
def run(cfg: Config, run) -> dict:
    """Run the case in ``run`` (a :class:`sciml.runs.Run`); returns the metrics."""
    import torch

    from sciml.cases.data import resolve_dataset

    comm = run.comm
    train_path = resolve_dataset(cfg.data.train, comm, log=run.log)
    test_path = resolve_dataset(cfg.data.test, comm, log=run.log)
    if not comm.is_root:
        return {}
    from sciml.solvers.sfno.training import reuse_freed_memory

    with reuse_freed_memory():
        return _run(cfg, run, train_path, test_path)


def _run(cfg: Config, run, train_path, test_path) -> dict:
    import torch

    from sciml.operators.spectral import fourier_resample
    from sciml.parallel import resolve_device
    from sciml.solvers import count_parameters
    from sciml.solvers.sfno import FNO3dBaseline, Trainer, predict, relative_l2, width_for_parameters

    dtype = torch.float32  # training precision (neuraloperator's FNO is complex64 inside)
    device = resolve_device(cfg.device, run.comm)
    w, tr = cfg.window, cfg.training
    ckpt = run.load_checkpoint() if run.resume else None
    state: dict[str, Any] = ckpt["state"] if ckpt is not None else {}

    # -- data
    t0 = time.perf_counter()
    train, train_head = _load(train_path, cfg, "data.train", tr.n_train, tr.resolution, dtype)
    train = train.to(device)
    x_train, y_train = train[:, : w.n_in], train[:, w.n_in:]
    test_gen, _ = _load(test_path, cfg, "data.test", cfg.n_test, None, dtype)
    n_gen = test_gen.shape[-1]
    test_gen = test_gen.to(device)
    test_lo = fourier_resample(test_gen, tr.resolution)
    x_test, y_test = test_lo[:, : w.n_in], test_lo[:, w.n_in:]
    scale = float(x_train.square().mean().sqrt())
    run.log(f"data: {len(train)} training windows at {tr.resolution}², {len(test_gen)} test windows "
            f"(generated at {n_gen}²), {w.n_in} -> {w.n_out} frames {w.frame_dt:g} apart, vorticity rms {scale:.3g} "
            f"({time.perf_counter() - t0:.1f} s)")

    # -- models
    torch.manual_seed(cfg.seed)
    sfno = build_sfno(cfg, scale).to(device)
    n_sfno = count_parameters(sfno)
    metrics: dict[str, Any] = {"sfno_parameters": n_sfno}
    # the best any SFNO with these output modes could do on the test windows (a lower bound)
    metrics["rel_l2_output_floor"] = _median(sfno.output_floor(x_test[:, -1], y_test))
    run.log(f"SFNO output modes {tuple(sfno.output.modes)}: best representable test rel. L2 "
            f"{metrics['rel_l2_output_floor']:.3g} (the floor of any such model)")
    # the forecast every model must beat: the last input frame held for all n_out frames
    metrics["rel_l2_persistence"] = _median(relative_l2(x_test[:, -1:].expand_as(y_test), y_test))
    run.log(f"persistence (last input frame held): test rel. L2 {metrics['rel_l2_persistence']:.4g}")
    augment = training_symmetries(train_head.attrs, tr.resolution, "training.augment", run.log).random \
        if tr.augment else None
    trainers = {"sfno": Trainer(sfno, x_train, y_train, epochs=tr.epochs, batch_size=tr.batch_size, lr=tr.lr,
                                weight_decay=tr.weight_decay, seed=cfg.seed, augment=augment)}
    if cfg.baseline.enabled:
        b = cfg.baseline

        def make_fno(width: int) -> FNO3dBaseline:
            return FNO3dBaseline(w.n_in, w.n_out, cfg.model.modes, width, b.n_layers, time_padding=b.time_padding,
                                 scale=scale)

        width = b.width or width_for_parameters(n_sfno, make_fno)
        torch.manual_seed(cfg.seed + 1)
        fno = make_fno(width).to(device)
        metrics["fno_parameters"] = count_parameters(fno)
        metrics["fno_width"] = width
        trainers["fno"] = Trainer(fno, x_train, y_train, epochs=tr.epochs, batch_size=tr.batch_size, lr=tr.lr,
                                  weight_decay=tr.weight_decay, seed=cfg.seed + 1, augment=augment)
    for name, trainer in trainers.items():
        if name in state.get("trainers", {}):
            trainer.load_state_dict(state["trainers"][name])
    run.log(f"SFNO: {n_sfno} parameters" + (f"; FNO3d baseline: width {metrics['fno_width']}, "
                                            f"{metrics['fno_parameters']} parameters" if "fno" in trainers else ""))

    def save(step: int) -> None:
        state["trainers"] = {k: t.state_dict() for k, t in trainers.items()}
        run.save_checkpoint(state, step=step, keep=cfg.output.keep_checkpoints)

    # -- training (checkpoint after every `checkpoint_every` epochs of each model)
    step = int(ckpt["step"]) if ckpt is not None else 0
    for name, trainer in trainers.items():
        if trainer.epoch:
            run.log(f"{name}: resuming after epoch {trainer.epoch}/{trainer.epochs}")
        epochs = run.progress(range(trainer.epoch, trainer.epochs), total=trainer.epochs, desc=f"{name} epochs",
                              initial=trainer.epoch)
        for _ in epochs:
            loss = trainer.run_epoch()
            err = _median(relative_l2(predict(trainer.model.eval(), x_test, tr.batch_size), y_test))
            trainer.history[-1]["test_rel_l2"] = err
            run.log(f"{name} epoch {trainer.epoch}: train loss {loss:.4g}, test rel. L2 {err:.4g} "
                    f"({trainer.history[-1]['seconds']:.1f} s)")
            step += 1
            if trainer.epoch % cfg.output.checkpoint_every == 0 or trainer.done:
                save(step)
        metrics[f"{name}_train_s"] = sum(h["seconds"] for h in trainer.history)
    sfno.eval()
    for p in sfno.parameters():
        p.requires_grad_(False)

    # -- evaluation at the training grid and zero-shot at the generation grid
    pred = predict(sfno, x_test, tr.batch_size)
    metrics["rel_l2_train_res"] = _median(relative_l2(pred, y_test))
    metrics["zero_shot_grid"] = n_gen
    metrics["train_grid"] = tr.resolution
    message = f"SFNO test rel. L2: {metrics['rel_l2_train_res']:.4g} at the training grid"
    zero_shot = zero_shot_key(n_gen, tr.resolution)
    if zero_shot is not None:
        pred_gen = predict(sfno, test_gen[:, : w.n_in], max(1, tr.batch_size // 4))
        metrics[zero_shot] = _median(relative_l2(pred_gen, test_gen[:, w.n_in:]))
        message += f", {metrics[zero_shot]:.4g} zero-shot at {n_gen}²"
    if "fno" in trainers:
        fno_pred = predict(trainers["fno"].model.eval(), x_test, tr.batch_size)
        metrics["rel_l2_fno"] = _median(relative_l2(fno_pred, y_test))
        message += f"; FNO3d: {metrics['rel_l2_fno']:.4g}"
    run.log(message)

    # -- fine-tuning at the generation grid
    ft = None
    if cfg.finetune.enabled:
        ft = _finetune(cfg, run, sfno, test_path, state, save, step, device)
        metrics.update(ft["metrics"])
    metrics["n_test"] = len(test_gen)
    metrics["n_train"] = len(train)
    if cfg.output.plots:
        _plots(cfg, run, trainers, ft)
    if ft is not None and cfg.output.paraview_trajectories > 0:
        _paraview(cfg, run, ft)
    return metrics


def _median(values) -> float:
    """Median of a tensor of per-sample values (the mean of the middle two for an even count)."""
    return float(np.median(values.detach().cpu().numpy()))


def _finetune(cfg: Config, run, sfno, test_path, state: dict, save, step: int, device) -> dict:
    """Fine-tune the output layer on the first ``finetune.n_trajectories`` test trajectories."""
    import torch
    from scipy.stats import spearmanr

    from sciml.solvers.sfno import finetune, relative_l2, residual_norm

    f, w = cfg.finetune, cfg.window
    dtype = {"float32": torch.float32, "float64": torch.float64}[f.dtype]
    n_ft = f.n_trajectories
    fine, m, head = _load_fine(test_path, cfg, n_ft, dtype)
    fine = fine.to(device)
    coarse, _ = _load(test_path, cfg, "data.test", n_ft, None, dtype)
    x_in = coarse[:, : w.n_in].to(device)
    n_gen = fine.shape[-1]
    eq = equation_from_attrs(head.attrs, n_gen, dtype, device)
    model = sfno.to(dtype)
    out_steps, frame_dt = m * w.n_out, w.frame_dt / m
    latent_steps = f.latent_refine * model.latent_steps
    run.log(f"fine-tuning {n_ft} trajectories at {n_gen}²: {out_steps} frames {frame_dt:g} apart (the test set's "
            f"stored spacing) after the last input frame, latent {latent_steps} steps, {f.steps} {f.optimizer} steps, "
            f"BDF{f.order}")
    blind = _blind_estimator(head.attrs, frame_dt, n_gen)
    if blind is not None:
        run.log(f"warning: {blind}")
    done: dict = state.setdefault("finetune", {})
    for i in run.progress(range(n_ft), total=n_ft, desc="fine-tuned"):
        if i in done:
            continue
        res = finetune(model, x_in[i: i + 1], eq, out_steps=out_steps, frame_dt=frame_dt,
                       latent_steps=latent_steps, steps=f.steps, optimizer=f.optimizer, lr=f.lr, order=f.order,
                       alpha=f.alpha)
        before, after, truth = res.before, res.after, fine[i: i + 1, 1:]
        done[i] = {
            "before": before[0].float().cpu(), "after": after[0].float().cpu(),
            "residual": res.loss[0], "seconds": res.seconds[0],
            "res_before": float(res.residual_before[0]), "res_after": float(res.residual_after[0]),
            "err_before": float(relative_l2(before, truth)), "err_after": float(relative_l2(after, truth)),
            "abs_before": float((before - truth).norm()), "abs_after": float((after - truth).norm()),
            "res_true": float(residual_norm(eq, fine[i: i + 1], frame_dt, f.order, f.alpha)),
        }
        d = done[i]
        run.log(f"trajectory {i}: rel. L2 {d['err_before']:.4g} -> {d['err_after']:.4g}, residual "
                f"{d['res_before']:.4g} -> {d['res_after']:.4g} (true {d['res_true']:.4g}), "
                f"{d['seconds']:.1f} s")
        step += 1
        save(step)
    rows = [done[i] for i in range(n_ft)]
    med = lambda key: float(np.median([r[key] for r in rows]))  # noqa: E731
    res_before = [r["res_before"] for r in rows]
    res_after = [r["res_after"] for r in rows]
    # the estimator needs no tuning: rank every test trajectory, not only the fine-tuned ones
    est = _estimator_rows(cfg, model, eq, test_path, done, dtype, device, out_steps, frame_dt, latent_steps, run)
    n_est = len(est)
    est_res = [r[0] for r in est]
    rho = spearmanr(est_res, [r[1] for r in est]).statistic if n_est > 2 else float("nan")
    rho_rel = spearmanr(est_res, [r[2] for r in est]).statistic if n_est > 2 else float("nan")
    # the same estimator on the fine-tuned predictions (near the solution an a-posteriori bound is tighter)
    rho_after = spearmanr(res_after, [r["abs_after"] for r in rows]).statistic if n_ft > 2 else float("nan")
    rho_rel_after = spearmanr(res_after, [r["err_after"] for r in rows]).statistic if n_ft > 2 else float("nan")

    # the solver on the same trajectories and grid: from the last input frame over the target window
    solver_s = _solver_seconds(cfg, head, x_in[: min(n_ft, 4), -1], n_gen, m)
    out = {
        "rel_l2_before_ft": med("err_before"),
        "rel_l2_after_ft": med("err_after"),
        "residual_hm1_before_ft": float(np.median(res_before)),
        "residual_hm1_after_ft": float(np.median(res_after)),
        "residual_hm1_true": med("res_true"),
        "estimator_error_spearman": float(rho),
        "estimator_rel_error_spearman": float(rho_rel),
        "estimator_error_spearman_after_ft": float(rho_after),
        "estimator_rel_error_spearman_after_ft": float(rho_rel_after),
        "finetune_error_ratio": float(np.median([r["err_before"] / r["err_after"] for r in rows])),
        "finetune_residual_ratio": float(np.median([b / a for b, a in zip(res_before, res_after)])),
        "finetune_s_per_traj": float(np.mean([r["seconds"] for r in rows])),
        "solver_s_per_traj": solver_s,
        "n_finetune": n_ft,
        "n_estimator": n_est,
        "finetune_frame_dt": frame_dt,
        # the estimator's floor (DESIGN.md: at most 0.1, or the residual cannot see the error fine-tuning removes)
        "residual_floor_ratio": float(np.median([r["res_true"] / r["res_before"] for r in rows])),
    }
    run.log("fine-tuning: rel. L2 {rel_l2_before_ft:.4g} -> {rel_l2_after_ft:.4g}, residual {residual_hm1_before_ft:.4g}"
            " -> {residual_hm1_after_ft:.4g} (true trajectories {residual_hm1_true:.4g}); Spearman(residual, error) "
            "{estimator_error_spearman:.3f} over {n_estimator} test trajectories (after fine-tuning "
            "{estimator_error_spearman_after_ft:.3f} over {n_finetune}); "
            "{finetune_s_per_traj:.1f} s per trajectory, solver "
            "{solver_s_per_traj:.2f} s".format(**out))
    if out["residual_floor_ratio"] > 0.1:
        run.log(f"warning: the true trajectories' residual is {out['residual_floor_ratio']:.3g} of the untuned "
                f"predictions' (median ratio; DESIGN.md asks at most 0.1): at frames {frame_dt:g} apart on "
                f"{n_gen}² the estimator barely sees the prediction's error; store the test set more finely")
    return {"metrics": out, "rows": rows, "truth": fine[:, 1:].cpu(), "frame_dt": frame_dt, "stride": m,
            "t0": (w.start + w.n_in - 1) * w.frame_dt + frame_dt, "length": head.domain_length}


#: Frame spacing and grid at which the residual of the true McWilliams trajectory falls to a tenth of
#: that of a 5 % error (DESIGN.md; at frames 0.2 apart it is 35-43 % of the signal).
MCWILLIAMS_FRAME_DT, MCWILLIAMS_GRID = 0.025, 128


def _blind_estimator(attrs: dict, frame_dt: float, n: int) -> str | None:
    """Why the estimator cannot see the prediction's error at frames ``frame_dt`` apart on the ``n × n`` grid
    for a dataset with ``attrs``, or None: McWilliams decaying turbulence needs frames at most
    :data:`MCWILLIAMS_FRAME_DT` apart on at least :data:`MCWILLIAMS_GRID`²; other data are judged by the
    measured floor after fine-tuning (``residual_floor_ratio``)."""
    try:
        kind = json.loads(str(attrs.get("initial_condition")))["type"]
    except (KeyError, TypeError, ValueError):
        kind = None
    if kind != "mcwilliams" or (frame_dt <= MCWILLIAMS_FRAME_DT * (1 + 1e-9) and n >= MCWILLIAMS_GRID):
        return None
    return (f"fine-tuning frames {frame_dt:g} apart on {n}² (the test set's stored spacing and the generation "
            f"grid): McWilliams data need at most {MCWILLIAMS_FRAME_DT:g} on at least {MCWILLIAMS_GRID}², or the "
            "residual of the true trajectory is too large for the estimator to see a few-percent error "
            "(DESIGN.md); store the test set more finely")


def _estimator_rows(cfg: Config, model, eq, test_path, done: dict, dtype, device, out_steps: int, frame_dt: float,
                    latent_steps: int, run) -> list[tuple[float, float, float]]:
    """``(residual, absolute error, relative error)`` of the untuned prediction for each of the ``n_test``
    test trajectories, at the fine-tuning's grid and frames (the fine-tuned ones from ``done``)."""
    import torch

    from sciml.solvers.sfno import finetune, relative_l2

    w, f = cfg.window, cfg.finetune
    rows: dict[int, tuple[float, float, float]] = {
        i: (d["res_before"], d["abs_before"], d["err_before"]) for i, d in done.items()}
    todo = [i for i in range(cfg.n_test) if i not in rows]
    t0 = time.perf_counter()
    for lo in range(0, len(todo), 8):
        chunk = todo[lo: lo + 8]
        fine, _, _ = _load_fine(test_path, cfg, chunk[-1] + 1, dtype, first_traj=chunk[0])
        coarse, _ = _load(test_path, cfg, "data.test", chunk[-1] + 1, None, dtype, first_traj=chunk[0])
        for i in chunk:
            k = i - chunk[0]
            truth = fine[k: k + 1, 1:].to(device)
            res = finetune(model, coarse[k: k + 1, : w.n_in].to(device), eq, out_steps=out_steps, frame_dt=frame_dt,
                           latent_steps=latent_steps, steps=0, order=f.order, alpha=f.alpha)
            rows[i] = (float(res.residual_before[0]), float((res.before - truth).norm()),
                       float(relative_l2(res.before, truth)))
    if todo:
        run.log(f"estimator on {len(todo)} more test trajectories ({time.perf_counter() - t0:.1f} s)")
    return [rows[i] for i in range(cfg.n_test)]


def _solver_seconds(cfg: Config, head, omega0, n: int, m: int) -> float:
    """Seconds per trajectory for our solver to produce the target window from the last input frame."""
    import torch

    from sciml.registry import resolve
    from sciml.solvers.navier_stokes import simulate

    gen = cfg.data.test.generate
    dtype = {"float32": torch.float32, "float64": torch.float64}[gen.dtype] if gen is not None else omega0.dtype
    eq = equation_from_attrs(head.attrs, n, dtype, omega0.device)
    stepper = resolve("stepper", str(head.attrs.get("stepper", "rk4_cn")))()
    dt = None if gen is None else gen.time.dt
    cfl = 0.5 if gen is None else gen.time.cfl
    w = cfg.window
    t0 = time.perf_counter()
    for i in range(omega0.shape[0]):
        simulate(eq, stepper, omega0[i: i + 1].to(dtype), n_frames=m * w.n_out, frame_dt=w.frame_dt / m, dt=dt,
                 cfl=cfl)
    return (time.perf_counter() - t0) / omega0.shape[0]


# --------------------------------------------------------------------------- output
def _plots(cfg: Config, run, trainers: dict, ft: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    for name, trainer in trainers.items():
        ep = [h["epoch"] for h in trainer.history]
        ax[0].plot(ep, [h["loss"] for h in trainer.history], label=f"{name} train")
        ax[1].plot(ep, [h.get("test_rel_l2", np.nan) for h in trainer.history], label=f"{name} test (median)")
    for a, title in zip(ax, ("training loss (relative L²)", "test relative L² (training grid)")):
        a.set_xlabel("epoch")
        a.set_yscale("log")
        a.set_title(title)
        a.legend()
    fig.tight_layout()
    fig.savefig(run.plots_dir / "loss_curves.png")
    plt.close(fig)
    if ft is None:
        return

    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=120)
    for r in ft["rows"]:
        ax.plot(np.asarray(r["residual"]), color="C0", alpha=0.5)
    ax.axhline(float(np.median([r["res_true"] for r in ft["rows"]])), color="k", ls="--",
               label="true trajectories (median)")
    ax.set_yscale("log")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("‖R‖ in L²(0,T;H⁻¹)")
    ax.set_title("residual during fine-tuning")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run.plots_dir / "finetune_residual.png")
    plt.close(fig)

    row, truth = ft["rows"][0], ft["truth"][0].float()
    L = ft["length"]
    k = truth.shape[0] - 1
    fields = [("truth", truth[k]), ("before fine-tuning", row["before"][k]), ("after fine-tuning", row["after"][k]),
              ("error before", row["before"][k] - truth[k]), ("error after", row["after"][k] - truth[k])]
    lim = float(truth[k].abs().max()) or 1.0
    elim = float((row["before"][k] - truth[k]).abs().max()) or 1.0
    fig, ax = plt.subplots(1, 5, figsize=(19, 3.9), dpi=110)
    for a, (title, f) in zip(ax, fields):
        v = elim if title.startswith("error") else lim
        im = a.imshow(f.numpy().T, origin="lower", extent=(0, L, 0, L), cmap="RdBu_r", vmin=-v, vmax=v)
        a.set_title(title)
        fig.colorbar(im, ax=a, shrink=0.8)
    t = ft["t0"] + k * ft["frame_dt"]
    fig.suptitle(f"test trajectory 0, last target frame t = {t:g}")
    fig.tight_layout()
    fig.savefig(run.plots_dir / "vorticity_finetune.png")
    plt.close(fig)


def _paraview(cfg: Config, run, ft: dict) -> None:
    """Truth, predictions before/after fine-tuning and their errors at the target frames."""
    from sciml.meshes.paraview import ImageGrid, VTKFile

    n_vis = min(cfg.output.paraview_trajectories, len(ft["rows"]))
    n = ft["truth"].shape[-1]
    dx = ft["length"] / n
    image = ImageGrid((n, n), spacing=(dx, dx), origin=(0.0, 0.0))
    vtk = VTKFile(run.path / "fields.pvd")
    m = ft["stride"]
    for j in range(m - 1, ft["truth"].shape[1], m):  # the target frames
        fields = {}
        for i in range(n_vis):
            sfx = "" if n_vis == 1 else f"_{i}"
            truth, row = ft["truth"][i, j].float(), ft["rows"][i]
            fields[f"truth{sfx}"] = truth.numpy()
            fields[f"before{sfx}"] = row["before"][j].numpy()
            fields[f"after{sfx}"] = row["after"][j].numpy()
            fields[f"error_before{sfx}"] = (row["before"][j] - truth).numpy()
            fields[f"error_after{sfx}"] = (row["after"][j] - truth).numpy()
        vtk.write(ft["t0"] + j * ft["frame_dt"], image, **fields)
