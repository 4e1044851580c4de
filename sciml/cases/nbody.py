"""Charged-particle N-body: an equivariant simulator with Gaunt products against Clebsch-Gordan products.

Case kind ``nbody``. Generates the EGNN/SEGNN charged-particle data set
(:mod:`sciml.solvers.nbody.data`: 5 particles, charges ±1, frame 30 -> frame 40),
trains the SEGNN-style network of :mod:`sciml.solvers.nbody.model` once per product
in ``model.products`` (same data, same initial seed, same schedule), and reports
the test MSE of each at its best validation epoch, its training time per epoch,
and two baselines (constant velocity; EGNN's fitted "Linear").

Trajectory seeds: trajectory ``i`` of the train / validation / test split uses
``sample_seed(seed, offset + i)`` with offsets 0, 10**9, 2*10**9, so a split does
not change when the size of another does.

The data set is written to ``DIR/dataset.pt`` and reused by ``sciml resume``.
Checkpoints (every epoch) hold the model, optimiser, scheduler and RNG states, the
loss history and the finished products' results. Training is data parallel over
the ranks of the job (``mpiexec -n N`` or ``torchrun``: every rank takes its share of
each batch, DDP averages the gradients; the same updates as one rank up to summation
order); ``threads`` sets torch's intra-op threads for the run (on the shared 2-core
development machine one thread trained an epoch in 5 s where two took 99 s: the
two threads wait on each other when other jobs hold the cores).

metrics.json: ``test_mse_<product>``, ``val_mse_<product>``, ``best_epoch_<product>``,
``train_s_per_epoch_<product>`` (wall clock of the training passes),
``train_cpu_s_per_epoch_<product>`` (process CPU time; steadier on a shared
machine), ``n_parameters_<product>``, ``test_mse_constant_velocity``,
``test_mse_linear_fit``, ``linear_fit_time``, ``clipped_fraction``, data sizes.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from sciml.config import NumberExpr, Schema
from sciml.parallel import resolve_device, sample_seed, settle_gradient_buckets
from sciml.solvers import count_parameters

__all__ = ["Config", "run", "SPLIT_OFFSETS"]

#: Offset of each split's trajectory indices in the seed sequence.
SPLIT_OFFSETS = {"train": 0, "val": 10**9, "test": 2 * 10**9}


# --------------------------------------------------------------------------- schema
class Data(Schema):
    """Sizes and physics of the charged-particle data (defaults: EGNN's ``charged5_initvel1small``)."""

    n_train: int = Field(3000, ge=1, le=10**8)
    n_val: int = Field(2000, ge=1, le=10**8)
    n_test: int = Field(2000, ge=1, le=10**8)
    n_particles: int = Field(5, ge=2, le=1000)
    loc_std: NumberExpr = Field(1.0, gt=0, description="std of initial positions per coordinate")
    vel_norm: NumberExpr = Field(0.5, ge=0, description="norm of every initial velocity")
    strength: NumberExpr = Field(1.0, gt=0, description="Coulomb constant k")
    dt: NumberExpr = Field(1e-3, gt=0, description="integrator step")
    max_force: Optional[NumberExpr] = Field(100.0, gt=0, description="clip per force component; null: none")
    sample_every: int = Field(100, ge=1, description="steps between stored frames")
    frame_in: int = Field(30, ge=0)
    frame_out: int = Field(40, ge=1)
    chunk_size: int = Field(4096, ge=1, description="systems integrated together (does not change the data)")

    @model_validator(mode="after")
    def _frames(self) -> "Data":
        if self.frame_out <= self.frame_in:
            raise ValueError(f"frame_out: must be after frame_in (got {self.frame_in} -> {self.frame_out})")
        return self


class Model(Schema):
    channels: int = Field(64, ge=1, le=4096)
    lmax: int = Field(1, ge=1, le=12, description="degree of hidden features")
    lmax_edge: Optional[int] = Field(None, ge=0, le=12, description="degree of edge harmonics; default lmax")
    layers: int = Field(4, ge=1, le=64)
    correlation: int = Field(2, ge=2, le=6, description="ν of the many-body block")
    n_radial: int = Field(16, ge=1, le=256)
    r_max: NumberExpr = Field(10.0, gt=0)
    radial_hidden: int = Field(64, ge=1, le=4096)
    message_layers: int = Field(2, ge=1, le=8, description="layers of each message function: 1 linear in the "
                                "features, 2 a steerable MLP of the edge as SEGNN's")
    products: list[Literal["gaunt", "cg"]] = Field(["gaunt", "cg"], description="trained one after the other")
    method: Literal["auto", "grid", "fourier"] = Field(
        "auto", description="path of the Gaunt products (auto: per-edge matrix in convolutions, grid elsewhere)")

    @field_validator("products")
    @classmethod
    def _products(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one product (gaunt, cg)")
        if len(set(value)) != len(value):
            raise ValueError(f"products repeat (got {value})")
        return value


class Training(Schema):
    epochs: int = Field(1000, ge=1, le=10**6)
    batch_size: int = Field(100, ge=1)
    lr: NumberExpr = Field(5e-4, gt=0)
    weight_decay: NumberExpr = Field(1e-8, ge=0)
    scheduler: Literal["cosine", "constant"] = "cosine"
    grad_clip: Optional[NumberExpr] = Field(None, gt=0, description="max gradient norm; null: none")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="initial weights and batch order")
    eval_every: int = Field(1, ge=1, description="epochs between validations (and the last one)")
    eval_batch_size: int = Field(500, ge=1)


class Output(Schema):
    plots: bool = True


class Config(Schema):
    kind: Literal["nbody"]
    seed: int = Field(0, ge=0, le=2**63 - 1, description="data seed (per-trajectory seeds derive from it)")
    dtype: Literal["float32", "float64"] = "float32"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: Optional[int] = Field(None, ge=1, le=1024,
                                   description="torch intra-op threads for this run; null: leave torch's setting")
    data: Data = Data()
    model: Model = Model()
    training: Training = Training()
    output: Output = Output()

    def launch_problems(self, world_size: int) -> list[tuple[tuple, str]]:
        """Every training batch (the last, partial one included) is shared by the ranks: each needs a sample."""
        size, last = self.training.batch_size, self.data.n_train % self.training.batch_size
        smallest = min(size, self.data.n_train) if last == 0 else min(size, last)
        if smallest >= world_size:
            return []
        return [(("training", "batch_size"), f"the smallest training batch ({smallest} of data.n_train = "
                                             f"{self.data.n_train} in batches of {size}) cannot be shared by "
                                             f"{world_size} ranks (at least one sample each)")]


# --------------------------------------------------------------------------- pieces
def system_of(cfg: Config):
    from sciml.solvers.nbody.data import ChargedSystem

    d = cfg.data
    return ChargedSystem(n_particles=d.n_particles, loc_std=d.loc_std, vel_norm=d.vel_norm, strength=d.strength,
                         dt=d.dt, max_force=d.max_force)


def make_datasets(cfg: Config, log=print) -> dict:
    """``{"train", "val", "test"}`` :class:`~sciml.solvers.nbody.data.NBodyData` in float64 on the CPU.

    The three splits are integrated together (chunks of ``data.chunk_size`` systems);
    each trajectory depends on its own seed only.
    """
    from sciml.solvers.nbody.data import generate

    d = cfg.data
    sizes = {"train": d.n_train, "val": d.n_val, "test": d.n_test}
    seeds = [sample_seed(cfg.seed, SPLIT_OFFSETS[split] + i) for split, n in sizes.items() for i in range(n)]
    t0 = time.perf_counter()
    everything = generate(system_of(cfg), seeds, d.frame_in, d.frame_out, d.sample_every, chunk_size=d.chunk_size)
    out, start = {}, 0
    for split, n in sizes.items():
        out[split] = everything.subset(slice(start, start + n))
        start += n
    clipped = float((everything.clipped_steps > 0).double().mean())
    log(f"data: {len(seeds)} trajectories ({d.n_train} / {d.n_val} / {d.n_test}) of "
        f"{(d.frame_out + 1) * d.sample_every} steps in {time.perf_counter() - t0:.1f} s; "
        f"{100 * clipped:.1f} % with clipped forces")
    return out


def build_model(cfg: Config, product: str, dtype=None):
    """The case's network with ``product``, built with ``dtype`` (default: torch's) as the default dtype,
    so that constant tables computed at construction (e3nn's Clebsch-Gordan coefficients among them)
    are exact in that precision rather than widened from float32."""
    import torch

    from sciml.solvers.nbody.model import NBodyNetwork

    m = cfg.model
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or previous)
    try:
        return NBodyNetwork(channels=m.channels, lmax=m.lmax, lmax_edge=m.lmax_edge, layers=m.layers,
                            correlation=m.correlation, n_radial=m.n_radial, r_max=m.r_max,
                            radial_hidden=m.radial_hidden, message_layers=m.message_layers,
                            product=product, method=m.method)
    finally:
        torch.set_default_dtype(previous)


def _optimiser(cfg: Config, model):
    import torch

    t = cfg.training
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if t.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)
    return opt, sched


# --------------------------------------------------------------------------- training one product
def _train_product(cfg: Config, run, product: str, data: dict, ckpt: dict | None, finished: dict) -> dict:
    """Train (or continue training) the network with ``product``; returns its results."""
    import torch

    from sciml.solvers.nbody.train import evaluate, train_epoch

    t = cfg.training
    device = resolve_device(cfg.device, run.comm)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    train, val, test = (data[s].to(dtype=dtype, device=device) for s in ("train", "val", "test"))

    torch.manual_seed(t.seed)
    model = build_model(cfg, product, dtype).to(device=device)
    module = model
    if run.comm.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(model)
        first = train.subset(torch.arange(min(t.batch_size, len(train)))[run.comm.rank:: run.comm.size])
        settle_gradient_buckets(module, lambda: module(first.pos, first.vel, first.charge).square().sum())
    opt, sched = _optimiser(cfg, model)
    shuffle = torch.Generator().manual_seed(t.seed)
    n_params = count_parameters(model)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "val_epoch": [], "val_mse": [],
                                "train_s": [], "train_cpu_s": []}
    best = {"val_mse": math.inf, "epoch": 0, "state": copy.deepcopy(model.state_dict())}
    start = 0
    if ckpt is not None and ckpt["state"]["product"] == product:
        s = ckpt["state"]
        model.load_state_dict(s["model"])
        opt.load_state_dict(s["optimizer"])
        sched.load_state_dict(s["scheduler"])
        shuffle.set_state(s["rng"]["shuffle"])
        torch.set_rng_state(s["rng"]["torch"])
        history, best, start = s["history"], s["best"], int(s["epoch"])
        run.log(f"{product}: resumed after epoch {start}/{t.epochs}")
    else:
        run.log(f"{product}: {n_params} parameters, {t.epochs} epochs of {math.ceil(len(train) / t.batch_size)} "
                f"batches")

    epochs = run.progress(range(start, t.epochs), total=t.epochs, desc=f"{product} epochs", initial=start)
    for epoch in epochs:
        w0, c0 = time.perf_counter(), time.process_time()
        loss = train_epoch(model, opt, train, t.batch_size, shuffle, grad_clip=t.grad_clip, module=module)
        history["train_s"].append(time.perf_counter() - w0)
        history["train_cpu_s"].append(time.process_time() - c0)
        sched.step()
        if not math.isfinite(loss):
            raise FloatingPointError(f"{product}: training loss is {loss} at epoch {epoch + 1}")
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(loss)
        if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
            v = evaluate(model, val, t.eval_batch_size)
            history["val_epoch"].append(epoch + 1)
            history["val_mse"].append(v)
            if v < best["val_mse"]:
                best = {"val_mse": v, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
        state = {
            "product": product, "epoch": epoch + 1, "init_args": model.init_args,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()},
            "history": history, "best": best, "finished": finished,
        }
        run.save_checkpoint(state, step=epoch + 1)

    model.load_state_dict(best["state"])
    test_mse = evaluate(model, test, t.eval_batch_size)
    final = {
        "test_mse": test_mse, "val_mse": best["val_mse"], "best_epoch": best["epoch"],
        "train_s_per_epoch": sum(history["train_s"]) / max(len(history["train_s"]), 1),
        "train_cpu_s_per_epoch": sum(history["train_cpu_s"]) / max(len(history["train_cpu_s"]), 1),
        "n_parameters": n_params, "history": history,
    }
    run.log(f"{product}: test MSE {test_mse:.4g} (best validation {best['val_mse']:.4g} at epoch {best['epoch']}), "
            f"{final['train_s_per_epoch']:.2f} s per epoch")
    return final


# --------------------------------------------------------------------------- the case
def run(cfg: Config, run) -> dict:
    """Run the case in ``run`` (a :class:`sciml.runs.Run`); returns the metrics."""
    import torch

    from sciml.parallel import init_torch_distributed

    # data-parallel training over the ranks of the job (if several); NCCL only for CUDA tensors
    init_torch_distributed(run.comm, backend="nccl" if resolve_device(cfg.device, run.comm).type == "cuda" else "gloo")
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, run)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: Config, run) -> dict:
    import torch

    from sciml.solvers.nbody.train import constant_velocity_mse, fit_linear_time, linear_mse

    run.log(f"torch threads: {torch.get_num_threads()}")
    dataset_file = run.path / "dataset.pt"
    if run.resume and dataset_file.is_file():
        data = torch.load(dataset_file, weights_only=False)
        run.log(f"data: reusing {dataset_file}")
    else:
        data = make_datasets(cfg, log=run.log)  # every rank: the same seeded data
        if run.comm.is_root:
            from sciml.runs import atomic_write

            with atomic_write(dataset_file) as fh:
                torch.save(data, fh)

    t_fit = fit_linear_time(data["train"])
    metrics: dict[str, Any] = {
        "test_mse_constant_velocity": constant_velocity_mse(data["test"]),
        "test_mse_linear_fit": linear_mse(data["test"], t_fit),
        "linear_fit_time": t_fit,
        "horizon": data["test"].horizon,
        "clipped_fraction": float((torch.cat([d.clipped_steps for d in data.values()]) > 0).double().mean()),
        "n_train": cfg.data.n_train, "n_val": cfg.data.n_val, "n_test": cfg.data.n_test,
    }
    run.log(f"baselines: constant velocity test MSE {metrics['test_mse_constant_velocity']:.4g}, "
            f"linear fit (t* = {t_fit:.3f}) {metrics['test_mse_linear_fit']:.4g}")

    ckpt = run.load_checkpoint() if run.resume else None
    finished: dict[str, dict] = dict(ckpt["state"]["finished"]) if ckpt is not None else {}
    for product in cfg.model.products:
        if product not in finished:
            finished[product] = _train_product(cfg, run, product, data, ckpt, finished)
            ckpt = None
    for product, res in finished.items():
        for key in ("test_mse", "val_mse", "best_epoch", "train_s_per_epoch", "train_cpu_s_per_epoch",
                    "n_parameters"):
            metrics[f"{key}_{product}"] = res[key]
    if {"gaunt", "cg"} <= set(finished):
        metrics["test_mse_ratio_gaunt_cg"] = finished["gaunt"]["test_mse"] / finished["cg"]["test_mse"]
        metrics["speedup_gaunt_over_cg"] = (finished["cg"]["train_s_per_epoch"]
                                            / finished["gaunt"]["train_s_per_epoch"])
    if cfg.output.plots:
        _plot(run, finished, metrics)
    return metrics


def _plot(run, finished: dict, metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=120)
    colours = {"gaunt": "tab:blue", "cg": "tab:orange"}
    for product, res in finished.items():
        h = res["history"]
        c = colours.get(product)
        ax.plot(h["epoch"], h["train_loss"], color=c, alpha=0.6, lw=1, label=f"{product} train")
        ax.plot(h["val_epoch"], h["val_mse"], color=c, lw=1.8, label=f"{product} validation")
    ax.axhline(metrics["test_mse_constant_velocity"], color="k", ls=":", lw=1, label="constant velocity (test)")
    ax.axhline(metrics["test_mse_linear_fit"], color="gray", ls="--", lw=1, label="linear fit (test)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE of positions")
    ax.set_title("charged N-body: Gaunt vs Clebsch–Gordan")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run.plots_dir / "loss_curves.png")
    plt.close(fig)
