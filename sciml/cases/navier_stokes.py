"""2D incompressible Navier-Stokes on the periodic torus (pseudo-spectral), and datasets of it.

Case kind ``navier_stokes``. Simulates ``n_trajectories`` independent flows, writes
the first few to ParaView, all of them to an HDF5 dataset (the layout the operator
learning cases read, DESIGN.md), and reports energy, enstrophy and throughput.

Under MPI trajectories are cut into chunks of ``chunk_size`` (independent of the
number of ranks), chunks are dealt round-robin to ranks, and every frame interval
uses one global time step (the CFL speed is an all-reduced maximum), so the dataset
is bitwise identical on any number of ranks.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import Field, model_validator

from sciml import __version__, registry
from sciml.config import NumberExpr, Schema, cross_key_error
from sciml.parallel import Comm, chunk_ranges, resolve_device, sample_seed

__all__ = ["Config", "run", "generate"]


# --------------------------------------------------------------------------- schema
class Grid(Schema):
    n: int = Field(128, ge=8, le=8192, description="points per side")
    length: NumberExpr = Field(1.0, gt=0, description="domain side L (may be written 2*pi)")

    @model_validator(mode="after")
    def _even(self) -> "Grid":
        if self.n % 2:
            raise ValueError(f"n: must be even for the real FFT layout (got {self.n})")
        return self


class NoForcing(Schema):
    type: Literal["none"] = "none"


class FNOForcing(Schema):
    """0.1 (sin 2π(x+y)/L + cos 2π(x+y)/L), the FNO benchmark's forcing."""

    type: Literal["fno"]


class KolmogorovForcing(Schema):
    """amplitude · cos(2π k y / L); use with drag (μ = 0.1 for the classical case)."""

    type: Literal["kolmogorov"]
    k: int = Field(4, ge=1)
    amplitude: float = -4.0


Forcing = Annotated[Union[NoForcing, FNOForcing, KolmogorovForcing], Field(discriminator="type")]


class Physics(Schema):
    viscosity: NumberExpr = Field(1e-3, ge=0)
    drag: NumberExpr = Field(0.0, ge=0, description="linear drag μ")
    forcing: Forcing = NoForcing()


class GaussianRandomField(Schema):
    type: Literal["gaussian_random_field"]
    alpha: float = Field(2.5, gt=0)
    tau: float = Field(7.0, gt=0)
    sigma: Optional[float] = Field(None, gt=0)


class McWilliams(Schema):
    type: Literal["mcwilliams"]
    k0: float = Field(4.0, gt=0)


class TaylorGreen(Schema):
    type: Literal["taylor_green"]
    k: int = Field(1, ge=1)
    amplitude: float = 1.0


class PiecewiseConstant(Schema):
    type: Literal["piecewise_constant"]
    n_patches: int = Field(4, ge=1, le=64)


class SineSum(Schema):
    type: Literal["sine_sum"]
    n_terms: int = Field(4, ge=1, le=64)
    max_wavenumber: int = Field(4, ge=1)


InitialCondition = Annotated[
    Union[GaussianRandomField, McWilliams, TaylorGreen, PiecewiseConstant, SineSum], Field(discriminator="type")
]


class Time(Schema):
    n_frames: int = Field(..., ge=1, le=100000, description="stored frames after the initial one")
    frame_dt: NumberExpr = Field(..., gt=0)
    stepper: Literal[registry.names("stepper")] = "rk4_cn"  # type: ignore[valid-type]
    cfl: float = Field(0.5, gt=0, le=1.0)
    dt: Optional[NumberExpr] = Field(None, gt=0, description="fixed step; default: CFL-limited per frame interval")
    warmup: NumberExpr = Field(0.0, ge=0, description="time simulated before the first stored frame (spin-up), "
                               "stepped in frame_dt intervals")

    @model_validator(mode="after")
    def _cn_euler_needs_dt(self) -> "Time":
        if self.stepper == "cn_euler" and self.dt is None:
            raise ValueError("dt: stepper cn_euler is first order and needs a fixed small dt")
        return self


class Output(Schema):
    dataset: bool = Field(True, description="write trajectories.h5")
    paraview_trajectories: int = Field(1, ge=0, description="how many trajectories go to fields.pvd")
    checkpoint_every: int = Field(10, ge=1, description="frames between checkpoints")
    plots: bool = True


class Config(Schema):
    kind: Literal["navier_stokes"]
    seed: int = Field(0, ge=0, le=2**63 - 1)
    n_trajectories: int = Field(1, ge=1, le=1_000_000)
    chunk_size: int = Field(8, ge=1, description="trajectories stepped together; fixed, independent of ranks")
    dtype: Literal["float32", "float64"] = "float64"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    grid: Grid = Grid()
    physics: Physics = Physics()
    initial_condition: InitialCondition = Field(..., description="initial vorticity")
    time: Time
    output: Output = Output()

    @model_validator(mode="after")
    def _resolved_wavenumbers(self) -> "Config":
        """Wavenumbers the grid can hold: a start below the Nyquist wavenumber n/2 (the state keeps every
        mode; above it the start is zero or aliased), a forcing below n/3 (the 2/3 rule masks it)."""
        n = self.grid.n
        ic, f = self.initial_condition, self.physics.forcing
        asked = []
        if ic.type == "taylor_green":
            asked.append(("initial_condition.k", ic.k, math.ceil(n / 2) - 1, "the Nyquist wavenumber n/2"))
        elif ic.type == "sine_sum":
            asked.append(("initial_condition.max_wavenumber", ic.max_wavenumber, math.ceil(n / 2) - 1,
                          "the Nyquist wavenumber n/2"))
        if f.type == "kolmogorov":
            asked.append(("physics.forcing.k", f.k, math.ceil(n / 3) - 1, "n/3 (the 2/3 rule masks the forcing)"))
        problems = [f"{key}: must be at most {top}, below {why} on a grid of n = {n} (got {k:g})"
                    for key, k, top, why in asked if k > top]
        if problems:
            raise cross_key_error(self, problems)
        return self

    @model_validator(mode="after")
    def _shown_from_the_first_chunk(self) -> "Config":
        if min(self.output.paraview_trajectories, self.n_trajectories) > self.chunk_size:
            raise ValueError(f"output.paraview_trajectories: at most chunk_size = {self.chunk_size} (the first "
                             f"chunk's trajectories are the ones written; got {self.output.paraview_trajectories})")
        return self


# --------------------------------------------------------------------------- building blocks
def build_equation(cfg: Config, comm: Comm | None = None):
    """Grid, equation and stepper described by ``cfg`` (on this rank's device; no files)."""
    import torch

    from sciml.operators.spectral import FourierGrid2D
    from sciml.solvers import navier_stokes as ns

    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    grid = FourierGrid2D(cfg.grid.n, cfg.grid.length, dtype=dtype, device=resolve_device(cfg.device, comm))
    f = cfg.physics.forcing
    forcing = None
    if f.type == "fno":
        forcing = ns.fno_forcing(grid)
    elif f.type == "kolmogorov":
        forcing = ns.kolmogorov_forcing(grid, k=f.k, amplitude=f.amplitude)
    eq = ns.NavierStokes2D(grid, viscosity=cfg.physics.viscosity, drag=cfg.physics.drag, forcing=forcing)
    stepper = registry.resolve("stepper", cfg.time.stepper)()
    return grid, eq, stepper


def initial_vorticity(cfg: Config, grid, indices: range):
    """Initial vorticity ``(len(indices), N, N)`` of the trajectories with these global indices."""
    from sciml.solvers import navier_stokes as ns

    ic = cfg.initial_condition
    params = ic.model_dump(exclude={"type"})
    if ic.type == "taylor_green":
        return ns.taylor_green(grid, len(indices), **params)
    seeds = [sample_seed(cfg.seed, i) for i in indices]
    factory = {
        "gaussian_random_field": ns.gaussian_random_field,
        "mcwilliams": ns.mcwilliams,
        "piecewise_constant": ns.piecewise_constant,
        "sine_sum": ns.sine_sum,
    }[ic.type]
    return factory(grid, seeds, **params)


def _forcing_text(cfg: Config) -> str:
    f = cfg.physics.forcing
    if f.type == "fno":
        return "fno: 0.1*(sin(2*pi*(x+y)/L) + cos(2*pi*(x+y)/L))"
    if f.type == "kolmogorov":
        return f"kolmogorov: {f.amplitude}*cos(2*pi*{f.k}*y/L)"
    return "none"


# --------------------------------------------------------------------------- the generator
class _State:
    """Per-rank simulation state: the spectral vorticity and stored frames of owned chunks."""

    def __init__(self) -> None:
        self.omega_hat: dict[int, Any] = {}  # chunk -> (b, N, N//2+1) complex
        self.frames: dict[int, list] = {}  # chunk -> list of (b, N, N) physical frames (CPU)


def generate(cfg: Config, comm: Comm, run=None, on_frame=None) -> dict | None:
    """Simulate every trajectory of ``cfg``; returns the assembled dataset on rank 0.

    Parameters
    ----------
    cfg
        A validated :class:`Config`.
    comm
        Communicator; chunks of ``cfg.chunk_size`` trajectories are dealt round-robin.
    run
        Optional :class:`sciml.runs.Run`: progress, checkpoints every
        ``output.checkpoint_every`` frames, and resume from its latest checkpoint.
    on_frame
        Optional ``on_frame(k, t, frames_of_chunk0)`` called on rank 0 after frame k
        (used for ParaView output); ``frames_of_chunk0`` is ``(b, N, N)``.

    Returns
    -------
    On rank 0: ``{"vorticity": (n_traj, n_frames+1, N, N) ndarray, "time": (n_frames+1,),
    "seed": (n_traj,), "n_substeps": (n_frames,), "steps": int, "stepping_s": float}``;
    None on other ranks.
    """
    import torch

    grid, eq, stepper = build_equation(cfg, comm)
    chunks = chunk_ranges(cfg.n_trajectories, cfg.chunk_size)
    mine = comm.owned(len(chunks))
    st = _State()
    n_substeps: list[int] = []
    k0 = 0
    ckpt = run.load_checkpoint() if (run is not None and run.resume) else None
    if ckpt is not None:
        s = ckpt["state"]
        k0 = int(ckpt["step"])
        n_substeps = list(s["n_substeps"])
        for c in mine:
            idx = chunks[c]
            st.omega_hat[c] = s["omega_hat"][idx.start:idx.stop].to(device=grid.kx.device)
            st.frames[c] = [fr for fr in s["frames"][idx.start:idx.stop].unbind(1)]
        if run is not None:
            run.log(f"resumed at frame {k0}/{cfg.time.n_frames} (t = {cfg.time.warmup + k0 * cfg.time.frame_dt:g})")
    else:
        for c in mine:
            st.omega_hat[c] = grid.rfft(initial_vorticity(cfg, grid, chunks[c]))
        t_spin = time.perf_counter()
        spin_up(cfg, comm, eq, stepper, grid, st.omega_hat)
        if run is not None and cfg.time.warmup > 0:
            run.log(f"warm-up to t = {cfg.time.warmup:g} before the first stored frame "
                    f"({time.perf_counter() - t_spin:.1f} s)")
        for c in mine:
            st.frames[c] = [grid.irfft(st.omega_hat[c]).detach().cpu()]
    frame_dt = cfg.time.frame_dt
    t0 = float(cfg.time.warmup)
    if on_frame is not None and comm.is_root and ckpt is None:
        on_frame(0, t0, _chunk0_frame(st, 0))

    def checkpoint(k: int) -> None:
        gathered = comm.gather({c: (st.omega_hat[c].cpu(), torch.stack(st.frames[c], 1)) for c in mine})
        if comm.is_root and run is not None:
            merged: dict[int, tuple] = {}
            for part in gathered:
                merged.update(part)
            w = torch.cat([merged[c][0] for c in range(len(chunks))])
            fr = torch.cat([merged[c][1] for c in range(len(chunks))])
            run.save_checkpoint({"omega_hat": w, "frames": fr, "n_substeps": n_substeps}, step=k)

    stepping = 0.0
    frames_iter = range(k0, cfg.time.n_frames)
    if run is not None:
        frames_iter = run.progress(frames_iter, total=cfg.time.n_frames, desc="frames", initial=k0)
    for k in frames_iter:
        t_start = time.perf_counter()
        n_sub = _advance_interval(cfg, comm, eq, stepper, grid, st.omega_hat, frame_dt)
        for c in mine:
            st.frames[c].append(grid.irfft(st.omega_hat[c]).detach().cpu())
        stepping += time.perf_counter() - t_start
        n_substeps.append(n_sub)
        if on_frame is not None:
            frame = _chunk0_frame(st, -1)
            if comm.is_root:
                on_frame(k + 1, t0 + (k + 1) * frame_dt, frame)
        if (k + 1) % cfg.output.checkpoint_every == 0 or k + 1 == cfg.time.n_frames:
            checkpoint(k + 1)

    gathered = comm.gather({c: torch.stack(st.frames[c], 1) for c in mine})
    steps_and_time = comm.gather(stepping)
    if not comm.is_root:
        return None
    merged = {}
    for part in gathered:
        merged.update(part)
    vort = torch.cat([merged[c] for c in range(len(chunks))]).numpy()
    return {
        "vorticity": vort,
        "time": t0 + np.arange(cfg.time.n_frames + 1) * frame_dt,
        "seed": np.array([sample_seed(cfg.seed, i) for i in range(cfg.n_trajectories)], dtype=np.uint64),
        "n_substeps": np.array(n_substeps, dtype=np.int64),
        "steps": int(sum(n_substeps)),
        "stepping_s": max(steps_and_time),
        "grid": grid,
        "equation": eq,
    }


def spin_up(cfg: Config, comm: Comm, eq, stepper, grid, omega_hat: dict) -> None:
    """Advance every owned chunk in place over ``cfg.time.warmup`` (nothing stored).

    Stepped in intervals of ``frame_dt`` (the last one shorter), each with the step count
    of the frames (fixed ``dt`` or CFL from the all-reduced largest speed), so the state
    reached does not depend on the number of ranks.
    """
    t_end, frame_dt = float(cfg.time.warmup), float(cfg.time.frame_dt)
    n_full = int(math.floor(t_end / frame_dt + 1e-9))
    intervals = [frame_dt] * n_full
    rest = t_end - n_full * frame_dt
    if rest > 1e-9 * frame_dt:
        intervals.append(rest)
    for h in intervals:
        _advance_interval(cfg, comm, eq, stepper, grid, omega_hat, h)


def _advance_interval(cfg: Config, comm: Comm, eq, stepper, grid, omega_hat: dict, h: float) -> int:
    """Advance every owned chunk in place over ``h`` in equal steps (fixed ``dt``, or CFL from the
    largest speed over all ranks); returns the number of steps."""
    from sciml.solvers.navier_stokes import advance, frame_substeps

    umax = 0.0
    if cfg.time.dt is None:
        umax = comm.allreduce_max(max((float(eq.max_speed(w)) for w in omega_hat.values()), default=0.0))
    n_sub = frame_substeps(h, umax, grid.dx, dt=cfg.time.dt, cfl=cfg.time.cfl)
    for c in omega_hat:
        omega_hat[c] = advance(eq, stepper, omega_hat[c], h, n_sub)
    if cfg.time.dt is not None:  # the CFL path finds a blow-up in the next interval's speed; a fixed dt must look
        bad = any(not bool(w.isfinite().all()) for w in omega_hat.values())
        if comm.allreduce_max(float(bad)) > 0:
            raise FloatingPointError(f"the vorticity is no longer finite: the fixed time.dt = {cfg.time.dt:g} is too "
                                     "large for this flow (leave time.dt unset for the CFL-limited step)")
    return n_sub


def _chunk0_frame(st: _State, index: int):
    """Frame ``index`` of chunk 0 (owned by rank 0 under round-robin); None elsewhere."""
    return st.frames[0][index] if 0 in st.frames else None


def write_dataset(path: Path, cfg: Config, data: dict) -> None:
    """Write the HDF5 trajectory dataset (layout of DESIGN.md), atomically, on rank 0."""
    import h5py

    from sciml.runs import atomic_write

    with atomic_write(path) as fh:
        with h5py.File(fh, "w") as h5:
            h5.create_dataset("vorticity", data=data["vorticity"], chunks=(1,) + data["vorticity"].shape[1:])
            h5.create_dataset("time", data=data["time"])
            h5.create_dataset("seed", data=data["seed"])
            h5.create_dataset("n_substeps", data=data["n_substeps"])
            h5.attrs["viscosity"] = cfg.physics.viscosity
            h5.attrs["drag"] = cfg.physics.drag
            h5.attrs["domain_length"] = cfg.grid.length
            h5.attrs["frame_dt"] = cfg.time.frame_dt
            h5.attrs["warmup"] = cfg.time.warmup
            # the step taken: frame_dt over the steps of a frame interval (a fixed dt is rounded down to divide
            # frame_dt; the CFL step varies, and this is the smallest)
            h5.attrs["dt"] = cfg.time.frame_dt / int(data["n_substeps"].max())
            if cfg.time.dt is not None:
                h5.attrs["dt_requested"] = cfg.time.dt
            h5.attrs["dt_mode"] = "fixed" if cfg.time.dt is not None else f"cfl={cfg.time.cfl} per frame interval"
            h5.attrs["forcing"] = _forcing_text(cfg)
            h5.attrs["initial_condition"] = json.dumps(cfg.initial_condition.model_dump())
            h5.attrs["stepper"] = cfg.time.stepper
            h5.attrs["case_seed"] = cfg.seed
            h5.attrs["sciml_version"] = __version__


# --------------------------------------------------------------------------- the case
def run(cfg: Config, run) -> dict:
    """Run the case in ``run`` (a :class:`sciml.runs.Run`); returns the metrics."""
    import torch

    from sciml.meshes.paraview import ImageGrid, VTKFile

    comm = run.comm
    n_vis = min(cfg.output.paraview_trajectories, cfg.n_trajectories)  # within the first chunk (Config)
    vtk = None
    image = None
    if comm.is_root and n_vis > 0:
        vtk = VTKFile(run.path / "fields.pvd", append=run.resume)
        dx = cfg.grid.length / cfg.grid.n
        image = ImageGrid((cfg.grid.n, cfg.grid.n), spacing=(dx, dx), origin=(0.0, 0.0))

    grid_eq: dict = {}

    def on_frame(k: int, t: float, frame) -> None:
        if vtk is None or frame is None:
            return
        if "grid" not in grid_eq:
            grid_eq["grid"], grid_eq["eq"], _ = build_equation(cfg)
        grid, eq = grid_eq["grid"], grid_eq["eq"]
        w = frame[:n_vis].to(device=grid.kx.device, dtype=grid.x.dtype)
        u, v = eq.velocity(grid.rfft(w))
        fields = {}
        for i in range(n_vis):
            suffix = "" if n_vis == 1 else f"_{i}"
            fields[f"vorticity{suffix}"] = w[i].cpu().numpy()
            fields[f"velocity{suffix}"] = torch.stack([u[i], v[i]], -1).cpu().numpy()
        if run.resume and k > 0:
            vtk.truncate_after(t - 0.5 * cfg.time.frame_dt)
        vtk.write(t, image, **fields)

    data = generate(cfg, comm, run=run, on_frame=on_frame)
    if not comm.is_root:
        return {}
    grid, eq = data["grid"], data["equation"]
    if cfg.output.dataset:
        write_dataset(run.path / "trajectories.h5", cfg, data)
    final = torch.as_tensor(data["vorticity"][:, -1]).to(device=grid.kx.device, dtype=grid.x.dtype)
    final_hat = grid.rfft(final)
    metrics: dict[str, Any] = {
        "steps": data["steps"],
        "final_time": float(data["time"][-1]),
        "n_trajectories": cfg.n_trajectories,
        "grid": cfg.grid.n,
        "energy_final": float(eq.energy(final_hat).mean()),
        "enstrophy_final": float(eq.enstrophy(final_hat).mean()),
        "steps_per_s": data["steps"] / max(data["stepping_s"], 1e-12),
        "trajectory_steps_per_s": data["steps"] * cfg.n_trajectories / max(data["stepping_s"], 1e-12),
        "world_size": comm.size,
    }
    if cfg.initial_condition.type == "taylor_green" and cfg.physics.forcing.type == "none":  # exact only unforced
        metrics["taylor_green_rel_error"] = _taylor_green_error(cfg, grid, final, float(data["time"][-1]))
    if cfg.output.plots:
        _plots(run, cfg, data)
    return metrics


def _taylor_green_error(cfg: Config, grid, final, t: float) -> float:
    """Relative L2 error of the final field against the exact decaying Taylor-Green vortex."""
    import torch

    from sciml.solvers.navier_stokes import taylor_green

    ic = cfg.initial_condition
    k_phys = 2 * math.pi * ic.k / cfg.grid.length
    decay = math.exp(-(2 * cfg.physics.viscosity * k_phys**2 + cfg.physics.drag) * t)
    exact = taylor_green(grid, final.shape[0], k=ic.k, amplitude=ic.amplitude) * decay
    return float(torch.linalg.vector_norm(final - exact) / torch.linalg.vector_norm(exact))


def _plots(run, cfg: Config, data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = cfg.grid.length
    w = data["vorticity"][0, -1]
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=120)
    lim = float(np.abs(w).max()) or 1.0
    im = ax.imshow(w.T, origin="lower", extent=(0, L, 0, L), cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.colorbar(im, ax=ax, label="vorticity ω")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"ω at t = {data['time'][-1]:g} ({cfg.initial_condition.type}, {cfg.grid.n}²)")
    fig.tight_layout()
    fig.savefig(run.plots_dir / "vorticity_final.png")
    plt.close(fig)

    import torch

    grid, eq = data["grid"], data["equation"]
    vort = torch.as_tensor(data["vorticity"][0]).to(device=grid.kx.device, dtype=grid.x.dtype)
    wh = grid.rfft(vort)
    energy = eq.energy(wh).cpu().numpy()
    enstrophy = eq.enstrophy(wh).cpu().numpy()
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=120)
    ax.plot(data["time"], energy, label="energy ½⟨|u|²⟩")
    ax.plot(data["time"], enstrophy, label="enstrophy ½⟨ω²⟩")
    ax.set_xlabel("t")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("trajectory 0")
    fig.tight_layout()
    fig.savefig(run.plots_dir / "energy_enstrophy.png")
    plt.close(fig)
