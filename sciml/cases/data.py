"""The ``data:`` block of learning cases: a trajectory dataset, given or generated and cached.

A learning case (``sfno``, ``scot``) names its data in one of two ways::

    data:
      path: runs/ns/trajectories.h5          # an existing dataset (DESIGN.md layout)

    data:
      generate:                              # a navier_stokes configuration (no `kind`)
        n_trajectories: 64
        grid: {n: 128, length: 1.0}
        ...

A generated dataset is cached under the data directory (``data.cache_dir``, else
``$SCIML_DATA_DIR``, else ``./data``; a resume uses the run's) as ``ns-<hash>.h5``, where the hash is taken
over the resolved generation configuration; a later run with the same configuration
reuses it. Generation runs on every rank of the job (trajectory chunks are dealt to
ranks), rank 0 writes the file atomically.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sciml.config import Schema, case_relative_path
from sciml.runs import default_data_dir
from sciml.cases import navier_stokes as ns_case

__all__ = ["Generate", "DataSource", "Trajectories", "resolve_dataset", "read_trajectories", "DATASET_FORMAT",
           "ISOTROPIC_INITIAL_CONDITIONS", "check_isotropic", "equation_from_attrs", "training_symmetries"]

#: Initial-condition generators whose distribution every symmetry of the square grid leaves unchanged
#: (a grid translation, a rotation or reflection with the vorticity's sign flip): isotropic spectra with
#: uniform phases (``gaussian_random_field``, ``mcwilliams``), wave vectors uniform over the square
#: ``{-K..K}²`` with uniform phases and symmetric amplitudes (``sine_sum``), and Voronoi patches of
#: centres uniform on the torus with symmetric values (``piecewise_constant``). A symmetry applied to a
#: trajectory of such data is another sample of the same distribution.
ISOTROPIC_INITIAL_CONDITIONS = ("gaussian_random_field", "mcwilliams", "sine_sum", "piecewise_constant")

#: Bumped whenever the layout or the numerics of generated datasets change (invalidates caches).
DATASET_FORMAT = 1


class Generate(ns_case.Config):
    """A ``navier_stokes`` case configuration, ``kind`` implied; outputs other than the dataset are ignored."""

    kind: Literal["navier_stokes"] = "navier_stokes"
    initial_condition: ns_case.InitialCondition
    time: ns_case.Time


class DataSource(Schema):
    path: Optional[Path] = Field(None, description="an existing trajectory dataset (.h5)")
    generate: Optional[Generate] = Field(None, description="a navier_stokes configuration to generate and cache")
    cache_dir: Optional[Path] = Field(None, description="where generated datasets are cached")

    @field_validator("path", "cache_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Optional[Path], info: ValidationInfo) -> Optional[Path]:
        return case_relative_path(value, info)

    @field_validator("path", mode="after")
    @classmethod
    def _exists(cls, value: Optional[Path]) -> Optional[Path]:
        if value is not None and not value.is_file():
            raise ValueError(f"no such dataset file: {value}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "DataSource":
        if (self.path is None) == (self.generate is None):
            raise ValueError("give exactly one of 'path' (an existing dataset) or 'generate' (a navier_stokes block)")
        return self


def generation_hash(gen: Generate) -> str:
    """Hash of everything that determines a generated dataset's content, bit for bit.

    ``chunk_size`` and ``device`` are part of it: batched FFTs of another batch size,
    or on another device, round differently in the last bits.
    """
    cfg = gen.model_dump(mode="json", exclude={"output"})
    if not cfg["time"].get("warmup"):  # added later: a zero warm-up keeps the hashes (caches) of before
        cfg["time"].pop("warmup", None)
    blob = json.dumps({"format": DATASET_FORMAT, "config": cfg}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def resolve_dataset(source: DataSource, comm, log=print) -> Path:
    """Path of the dataset ``source`` names, generating and caching it first if needed.

    Collective: every rank must call it (generation is distributed over ranks).
    """
    if source.path is not None:
        return source.path
    gen = source.generate
    cache = source.cache_dir or default_data_dir()
    target = cache / f"ns-{generation_hash(gen)}.h5"
    exists = comm.bcast(target.is_file() if comm.is_root else None)
    if exists:
        log(f"data: reusing cached dataset {target}")
        return target
    log(f"data: generating {gen.n_trajectories} trajectories at {gen.grid.n}² into {target}")
    data = ns_case.generate(gen, comm)
    if comm.is_root:
        cache.mkdir(parents=True, exist_ok=True)
        ns_case.write_dataset(target, gen, data)
    comm.barrier()
    return target


@dataclass
class Trajectories:
    """A trajectory dataset in memory.

    Attributes
    ----------
    vorticity : Tensor, shape ``(n_traj, n_t, N, N)``
    time : Tensor, shape ``(n_t,)``
    seed : ndarray, shape ``(n_traj,)``
    attrs : dict
        The file's attributes (``viscosity``, ``domain_length``, ``frame_dt``, ...).
    path : Path
    """

    vorticity: Any
    time: Any
    seed: Any
    attrs: dict
    path: Path

    @property
    def domain_length(self) -> float:
        return float(self.attrs["domain_length"])

    @property
    def viscosity(self) -> float:
        return float(self.attrs["viscosity"])


def dataset_extent(source: DataSource) -> tuple[int, int, int, float]:
    """``(trajectories, stored frames (the initial one included), grid N, frame spacing)`` of a dataset,
    without generating or reading it: from the configuration of a generated one, from the header of a
    ``path`` one (frame spacing nan when the file does not say). ValueError if the file is not a
    trajectory dataset."""
    gen = source.generate
    if gen is not None:
        return gen.n_trajectories, gen.time.n_frames + 1, gen.grid.n, float(gen.time.frame_dt)
    import h5py

    try:
        with h5py.File(source.path, "r") as h5:
            shape = h5["vorticity"].shape if "vorticity" in h5 else None
            frame_dt = h5.attrs.get("frame_dt")
    except OSError as exc:
        raise ValueError(f"cannot read the dataset ({exc})") from None
    if shape is None or len(shape) != 4:
        raise ValueError("not a trajectory dataset: no vorticity of shape (n_traj, n_t, N, N)")
    try:
        frame_dt = float(frame_dt)
    except (TypeError, ValueError):
        frame_dt = float("nan")
    return int(shape[0]), int(shape[1]), int(shape[-1]), frame_dt


def read_trajectories(path: str | Path, *, dtype=None, indices=None) -> Trajectories:
    """Read a dataset written by the ``navier_stokes`` case (any rank may call it).

    Parameters
    ----------
    path
        The ``.h5`` file.
    dtype
        torch dtype of the returned vorticity (default: as stored).
    indices
        Optional trajectory indices to read (sorted); default all.
    """
    import h5py
    import numpy as np
    import torch

    path = Path(path)
    with h5py.File(path, "r") as h5:
        missing = [k for k in ("vorticity", "time") if k not in h5]
        if missing:
            raise ValueError(f"{path}: not a sciml trajectory dataset (missing {', '.join(missing)})")
        vort = h5["vorticity"][...] if indices is None else h5["vorticity"][np.asarray(indices)]
        if vort.ndim != 4 or vort.shape[-1] != vort.shape[-2]:
            raise ValueError(f"{path}: expected vorticity of shape (n_traj, n_t, N, N), got {vort.shape}")
        time = h5["time"][...]
        seed = h5["seed"][...] if "seed" in h5 else None
        attrs = {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in h5.attrs.items()}
    w = torch.from_numpy(vort)
    if dtype is not None:
        w = w.to(dtype)
    return Trajectories(vorticity=w, time=torch.from_numpy(time), seed=seed, attrs=attrs, path=path)


def check_isotropic(source: DataSource, key: str, where: str) -> None:
    """Reject augmentation (setting ``key``) of a dataset (``where`` in the case) whose initial conditions
    are not in :data:`ISOTROPIC_INITIAL_CONDITIONS`: from the configuration of a generated one, from the
    header of a ``path`` one (its ``initial_condition`` attribute; a file that does not say is checked
    again when read, :func:`training_symmetries`)."""
    if source.generate is not None:
        ic, named = source.generate.initial_condition.type, f"{where}.generate.initial_condition.type"
    else:
        import h5py

        try:
            with h5py.File(source.path, "r") as h5:
                ic = json.loads(str(h5.attrs["initial_condition"]))["type"]
        except (OSError, KeyError, ValueError, TypeError):
            return
        named = f"the initial_condition of {where}.path {Path(source.path).name}"
    if ic not in ISOTROPIC_INITIAL_CONDITIONS:
        raise ValueError(f"{key}: needs isotropic initial conditions ({', '.join(ISOTROPIC_INITIAL_CONDITIONS)}), "
                         f"{named} is {ic!r}")


def equation_from_attrs(attrs: dict, n: int, dtype, device=None):
    """The equation a dataset was generated with, on an ``n × n`` grid, from its attributes."""
    from sciml.operators.spectral import FourierGrid2D
    from sciml.solvers import navier_stokes as ns

    grid = FourierGrid2D(n, float(attrs["domain_length"]), dtype=dtype, device=device)
    text = str(attrs.get("forcing", "none"))
    forcing = None
    if text.startswith("fno"):
        forcing = ns.fno_forcing(grid)
    elif text.startswith("kolmogorov"):
        m = re.match(r"kolmogorov: ([-+0-9.eE]+)\*cos\(2\*pi\*(\d+)\*y/L\)", text)
        if m is None:
            raise ValueError(f"cannot read the forcing {text!r} of the dataset")
        forcing = ns.kolmogorov_forcing(grid, k=int(m.group(2)), amplitude=float(m.group(1)))
    elif text != "none":
        raise ValueError(f"unknown forcing {text!r} in the dataset")
    return ns.NavierStokes2D(grid, viscosity=float(attrs["viscosity"]), drag=float(attrs.get("drag", 0.0)),
                             forcing=forcing)


def training_symmetries(attrs: dict, n: int, key: str, log=print):
    """The symmetry group of a training dataset's equation on the ``n × n`` training grid, for augmentation
    (:class:`~sciml.solvers.navier_stokes.GridSymmetries`: the square's symmetries its forcing keeps).

    ``key`` (the case's setting, e.g. ``"training.augment"``) names the error raised when the data's
    initial conditions are not in :data:`ISOTROPIC_INITIAL_CONDITIONS`: moved samples of other
    distributions would be solutions, but of another data set than the test's."""
    import torch

    from sciml.solvers.navier_stokes import GridSymmetries

    try:
        kind = json.loads(str(attrs["initial_condition"]))["type"]
    except (KeyError, ValueError, TypeError):
        kind = None
    if kind not in ISOTROPIC_INITIAL_CONDITIONS:
        raise ValueError(f"{key}: the training data's initial conditions must come from an isotropic "
                         f"distribution ({', '.join(ISOTROPIC_INITIAL_CONDITIONS)}), got {kind!r}")
    eq = equation_from_attrs(attrs, n, torch.float64)
    group = GridSymmetries.of(n, eq.forcing)
    log(f"augmentation: {len(group)} symmetries of the equation on the {n}² grid "
        f"({len(set(group.ops.tolist()))} of the 8 rotations/reflections of the square)")
    return group
