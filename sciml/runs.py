"""The run folder: everything one ``sciml run`` leaves behind, and how it resumes.

Layout of ``DIR/`` (DESIGN.md, "Command line contract")::

    config.yaml        resolved configuration (defaults filled in)
    case.yaml          the case file as given, and overrides.txt with the --set lines
    metrics.json       the case's result numbers (JSON object)
    log.txt            what rank 0 logged
    provenance.json    versions, git commit, seed, world size, wall time (refreshed at every
                       checkpoint; a resumed run nests the earlier record under "previous")
    fields.pvd, fields/   ParaView output (written by the case)
    checkpoints/       latest.pt (+ numbered ones), written atomically
    plots/             PNG figures

Only rank 0 writes shared files; every rank may read them. Files are replaced
atomically (temporary file + ``os.replace``), so a run killed at any moment leaves
the previous complete version of each file.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from sciml.parallel import Comm, SerialComm

__all__ = ["Run", "atomic_write", "atomic_write_text", "save_arrays", "load_arrays", "CHECKPOINT_FORMAT"]

#: Version of the checkpoint dictionary layout written by :meth:`Run.save_checkpoint`.
CHECKPOINT_FORMAT = 1

T = TypeVar("T")


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file ``.<name>.<random>.tmp`` beside ``path``, created with mode 0666 so that the kernel
    applies the umask and any default ACL of the folder, as for ``open`` (``mkstemp`` makes 0600 files,
    unreadable by a cluster group sharing the results)."""
    import secrets

    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def save_arrays(path: str | Path, obj: Any) -> None:
    """Write ``obj`` (dicts, lists, dataclasses of numpy arrays and numbers; CPU only) to ``path``
    atomically, as a pickle of protocol 5: the arrays' bytes go to the file as they are.

    For large numpy states this is several times faster than ``torch.save``, which pickles
    numpy arrays with protocol 2 (their bytes re-encoded, 1.5x the size: 3-4 s against 0.15 s for
    170 MB here). :func:`load_arrays` reads it, and ``torch.save`` files as well."""
    with atomic_write(path) as fh:
        pickle.dump(obj, fh, protocol=5)


def load_arrays(path: str | Path) -> Any:
    """Read a file of :func:`save_arrays` (or of ``torch.save``, mapped to the CPU)."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # not a zip: a plain pickle
            fh.seek(0)
            return pickle.load(fh)
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def default_data_dir() -> Path:
    """Where generated datasets are cached when a case names no ``cache_dir``: ``$SCIML_DATA_DIR``, else
    ``./data``, as an absolute path (recorded in ``provenance.json`` so that a resume finds it again)."""
    return Path(os.environ.get("SCIML_DATA_DIR", "data")).resolve()


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries a run may use (None: not installed)."""
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("sciml", "torch", "numpy", "scipy", "e3nn", "torch-harmonics", "neuraloperator", "gpytorch",
                 "linear_operator", "vtk", "pyvista", "h5py", "mpi4py", "pydantic"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


class Run:
    """A run folder, bound to the communicator of the job.

    Parameters
    ----------
    path
        The folder (created by rank 0 if missing).
    comm
        Communicator; rank 0 writes, all ranks may read.
    resume
        True when continuing an earlier run in the same folder: existing files are
        kept and appended to.
    attempt
        Names this process's run or resume, the same on every rank: recorded in
        ``provenance.json``, so that a rank can tell rank 0's record of this attempt
        from one an earlier process left.
    """

    def __init__(self, path: str | Path, comm: Comm | None = None, *, resume: bool = False,
                 attempt: str | None = None):
        self.path = Path(path)
        self.comm = comm or SerialComm()
        self.resume = resume
        self.attempt = attempt
        self.checkpoint_dir = self.path / "checkpoints"
        self.plots_dir = self.path / "plots"
        self._t0 = time.perf_counter()
        self._started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._provenance: dict[str, Any] | None = None  # the fields of the last write, refreshed at checkpoints
        self._previous: dict[str, Any] | None = None  # the record of the process this one resumes
        self._status: str | None = None
        if self.comm.is_root:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            self.plots_dir.mkdir(parents=True, exist_ok=True)
            if resume:  # temporary files of a write the previous process was killed in (atomic_write)
                temporary = [*self.path.glob(".*.tmp"), *self.checkpoint_dir.rglob(".*.tmp"),
                             *(self.path / "fields").rglob(".*.tmp"), *self.plots_dir.rglob(".*.tmp")]
                for stale in temporary:
                    stale.unlink(missing_ok=True)
                try:
                    self._previous = json.loads((self.path / "provenance.json").read_text())
                except (OSError, ValueError):
                    pass
        self.comm.barrier()
        self._log = open(self.path / "log.txt", "a", encoding="utf-8") if self.comm.is_root else None

    # ------------------------------------------------------------------ files
    def write_config(self, resolved: dict, case_text: str | None, overrides: list[str]) -> None:
        """Write ``config.yaml`` (resolved), ``case.yaml`` (as given) and ``overrides.txt``."""
        if not self.comm.is_root:
            return
        from sciml.config import dump_yaml

        atomic_write_text(self.path / "config.yaml", dump_yaml(resolved))
        if case_text is not None and not self.resume:
            atomic_write_text(self.path / "case.yaml", case_text)
        if overrides and not self.resume:
            atomic_write_text(self.path / "overrides.txt", "\n".join(overrides) + "\n")

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Write ``metrics.json`` (rank 0)."""
        if self.comm.is_root:
            atomic_write_text(self.path / "metrics.json", json.dumps(_jsonable(metrics), indent=2, allow_nan=False) + "\n")

    def write_provenance(self, *, seed: int | None, kind: str, status: str, extra: dict | None = None) -> None:
        """Write ``provenance.json`` (rank 0): versions, commit, seed, world size, wall time.

        ``wall_time_s`` is this process's, ``wall_time_total_s`` adds the processes it
        resumes. While ``status`` is ``"running"`` every checkpoint refreshes the file, so a
        killed process leaves its wall time up to its last checkpoint.
        """
        if not self.comm.is_root:
            return
        if self._provenance is None:  # constant over the process: look them up once
            self._provenance = {"command": sys.argv, "hostname": platform.node(), "git_commit": _git_commit(),
                                "versions": versions()}
        self._provenance.update(seed=seed, kind=kind, extra=extra)
        self._write_provenance(status)

    def _write_provenance(self, status: str) -> None:
        info = self._provenance
        assert info is not None
        wall = self.wall_time()
        earlier = 0.0
        if self._previous is not None:
            earlier = float(self._previous.get("wall_time_total_s", self._previous.get("wall_time_s", 0.0)) or 0.0)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record: dict[str, Any] = {
            "kind": info["kind"],
            "status": status,
            "seed": info["seed"],
            "world_size": self.comm.size,
            "started": self._started,
            "updated": now,
        }
        if self.attempt is not None:
            record["attempt"] = self.attempt
        if status != "running":
            record["finished"] = now
        record.update({
            "wall_time_s": round(wall, 3),
            "wall_time_total_s": round(wall + earlier, 3),
            "resumed": self.resume,
            "data_dir": str(default_data_dir()),
            "command": info["command"],
            "hostname": info["hostname"],
            "git_commit": info["git_commit"],
            "versions": info["versions"],
        })
        try:
            import torch

            record["torch_threads"] = torch.get_num_threads()
            record["cuda"] = torch.cuda.is_available()
        except ImportError:  # pragma: no cover
            pass
        if info["extra"]:
            record.update(info["extra"])
        if self._previous is not None:
            record["previous"] = self._previous
        self._status = status
        atomic_write_text(self.path / "provenance.json", json.dumps(_jsonable(record), indent=2, allow_nan=False) + "\n")

    def wall_time(self) -> float:
        return time.perf_counter() - self._t0

    # ------------------------------------------------------------------ logging
    def log(self, message: str) -> None:
        """Print on rank 0 and append to ``log.txt``."""
        if not self.comm.is_root:
            return
        stamp = datetime.now().strftime("%H:%M:%S")
        line = f"[{stamp}] {message}"
        print(line, flush=True)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()

    def progress(self, iterable: Iterable[T], total: int, desc: str, initial: int = 0) -> Iterator[T]:
        """Iterate with a progress bar on a terminal (rank 0), plain log lines otherwise.

        Off a terminal (batch jobs, CI) about ten lines are logged for the whole loop.
        """
        if self.comm.is_root and sys.stderr.isatty():
            from tqdm import tqdm

            yield from tqdm(iterable, total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=True)
            if self._log is not None:
                self._log.write(f"{desc}: {total}/{total} done\n")
            return
        every = max(1, total // 10)
        t0 = time.perf_counter()
        done = initial
        for item in iterable:
            yield item
            done += 1
            if self.comm.is_root and (done % every == 0 or done == total):
                rate = (done - initial) / max(time.perf_counter() - t0, 1e-9)
                self.log(f"{desc}: {done}/{total} ({rate:.3g}/s)")

    # ------------------------------------------------------------------ checkpoints
    @property
    def latest_checkpoint(self) -> Path:
        return self.checkpoint_dir / "latest.pt"

    def save_checkpoint(self, state: dict[str, Any], step: int, *, keep: bool = False) -> None:
        """Write ``checkpoints/latest.pt`` atomically (rank 0); ``keep`` also stores ``step_{step}.pt``.

        ``state`` must hold everything needed to continue bit-for-bit: arrays,
        optimiser/scheduler state, RNG states and the step counter.
        """
        if not self.comm.is_root:
            return
        import torch

        payload = {"format": CHECKPOINT_FORMAT, "step": int(step), "state": state}
        # protocol 5: numpy arrays in the state are written as they are (protocol 2 re-encodes them)
        with atomic_write(self.latest_checkpoint) as fh:
            torch.save(payload, fh, pickle_protocol=5)
        if keep:
            with atomic_write(self.checkpoint_dir / f"step_{step:08d}.pt") as fh:
                torch.save(payload, fh, pickle_protocol=5)
        if self._provenance is not None and self._status == "running":
            self._write_provenance("running")

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest checkpoint's ``{"step", "state"}`` (every rank reads it), or None."""
        import torch

        if not self.latest_checkpoint.is_file():
            return None
        payload = torch.load(self.latest_checkpoint, map_location="cpu", weights_only=False)
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise RuntimeError(
                f"{self.latest_checkpoint}: checkpoint format {payload.get('format')} is not "
                f"the supported format {CHECKPOINT_FORMAT}"
            )
        return payload

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays inside ``obj`` to plain JSON types; NaN and ±inf become
    null (strict JSON has no such numbers: ``json.loads`` elsewhere would reject the file)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
