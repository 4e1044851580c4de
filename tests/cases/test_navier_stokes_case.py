"""The navier_stokes case end to end: run folder contract, kill + resume, MPI invariance."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from support import child_env, run_sciml, sciml_cmd, validate

SMALL = """\
kind: navier_stokes
seed: 3
n_trajectories: {n_traj}
chunk_size: 2
dtype: float64
grid: {{n: {n}, length: 2*pi}}
physics: {{viscosity: 1.0e-3}}
initial_condition: {{type: {ic}}}
time: {{n_frames: {frames}, frame_dt: 0.1{dt}}}
output: {{paraview_trajectories: 2, checkpoint_every: {every}}}
"""


def case(tmp_path: Path, name="case.yaml", n_traj=3, n=32, ic="mcwilliams", frames=4, every=2, dt="") -> Path:
    p = tmp_path / name
    p.write_text(SMALL.format(n_traj=n_traj, n=n, ic=ic, frames=frames, every=every, dt=dt))
    return p


def read_dataset(folder: Path) -> tuple[np.ndarray, dict]:
    with h5py.File(folder / "trajectories.h5", "r") as h5:
        return h5["vorticity"][...], {k: h5.attrs[k] for k in h5.attrs}


def test_run_folder_contract(tmp_path):
    out = tmp_path / "run"
    res = run_sciml("run", str(case(tmp_path)), "--out", str(out), "--set", "time.stepper=heun_cn")
    assert res.returncode == 0, res.stderr
    for f in ("config.yaml", "case.yaml", "overrides.txt", "metrics.json", "log.txt", "provenance.json",
              "fields.pvd", "trajectories.h5", "checkpoints/latest.pt", "plots/vorticity_final.png"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("steps", "final_time", "energy_final", "enstrophy_final", "steps_per_s"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["final_time"] == pytest.approx(0.4)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seed"] == 3 and prov["world_size"] == 1 and prov["wall_time_s"] > 0
    assert prov["versions"]["torch"] and prov["status"] == "finished"
    assert "stepper: heun_cn" in (out / "config.yaml").read_text()
    vort, attrs = read_dataset(out)
    assert vort.shape == (3, 5, 32, 32)
    assert attrs["viscosity"] == 1e-3 and attrs["domain_length"] == pytest.approx(2 * np.pi)
    assert attrs["stepper"] == "heun_cn" and attrs["frame_dt"] == pytest.approx(0.1)
    # every frame of the two visualised trajectories is in the ParaView collection
    import vtk

    text = (out / "fields.pvd").read_text()
    assert text.count("<DataSet") == 5
    piece = sorted((out / "fields").glob("*.vti"))[-1]
    reader = vtk.vtkXMLImageDataReader()
    reader.SetFileName(str(piece))
    reader.Update()
    from vtk.util.numpy_support import vtk_to_numpy

    w = vtk_to_numpy(reader.GetOutput().GetPointData().GetArray("vorticity_0")).reshape(32, 32, order="F")
    assert np.allclose(w, vort[0, -1], rtol=0, atol=1e-12)


def test_taylor_green_metric(tmp_path):
    out = tmp_path / "tg"
    p = tmp_path / "tg.yaml"
    p.write_text("kind: navier_stokes\ngrid: {n: 32, length: 2*pi}\nphysics: {viscosity: 0.05}\n"
                 "initial_condition: {type: taylor_green, k: 2}\ntime: {n_frames: 4, frame_dt: 0.25, dt: 0.01}\n"
                 "output: {dataset: false, plots: false}\n")
    res = run_sciml("run", str(p), "--out", str(out))
    assert res.returncode == 0, res.stderr
    err = json.loads((out / "metrics.json").read_text())["taylor_green_rel_error"]
    assert err < 1e-6
    # forced, the decaying vortex is no longer the exact solution: no error against it is reported
    res = run_sciml("run", str(p), "--out", str(out), "--set", "physics.forcing.type=kolmogorov")
    assert res.returncode == 0, res.stderr
    assert "taylor_green_rel_error" not in json.loads((out / "metrics.json").read_text())


def test_warmup_continues_the_same_trajectory(tmp_path):
    """Frames after a warm-up of two frame intervals are the frames 2.. of a run without one."""
    cfg = case(tmp_path, n_traj=2, frames=4, every=10)
    full, warm = tmp_path / "full", tmp_path / "warm"
    assert run_sciml("run", str(cfg), "--out", str(full)).returncode == 0
    res = run_sciml("run", str(cfg), "--out", str(warm), "--set", "time.warmup=0.2", "--set", "time.n_frames=2")
    assert res.returncode == 0, res.stderr
    a, _ = read_dataset(full)
    b, attrs = read_dataset(warm)
    assert b.shape == (2, 3, 32, 32) and attrs["warmup"] == pytest.approx(0.2)
    assert np.array_equal(a[:, 2:], b)
    with h5py.File(warm / "trajectories.h5", "r") as h5:
        assert np.allclose(h5["time"][...], [0.2, 0.3, 0.4])
    assert json.loads((warm / "metrics.json").read_text())["final_time"] == pytest.approx(0.4)


def test_sigkill_then_resume_gives_identical_result(tmp_path):
    cfg = case(tmp_path, n_traj=2, n=48, frames=30, every=1, dt=", dt: 0.002")
    ref = tmp_path / "ref"
    assert run_sciml("run", str(cfg), "--out", str(ref)).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(sciml_cmd("run", str(cfg), "--out", str(out)), env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpt = out / "checkpoints" / "latest.pt"
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert ckpt.exists(), "no checkpoint before the kill"
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    res = run_sciml("resume", str(out))
    assert res.returncode == 0, res.stderr
    a, _ = read_dataset(ref)
    b, _ = read_dataset(out)
    assert np.array_equal(a, b)
    assert (out / "fields.pvd").read_text().count("<DataSet") == 31
    m_ref = json.loads((ref / "metrics.json").read_text())
    m_res = json.loads((out / "metrics.json").read_text())
    assert m_ref["energy_final"] == m_res["energy_final"] and m_ref["steps"] == m_res["steps"]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["status"] == "finished" and prov["previous"]["status"] == "running"
    assert prov["wall_time_total_s"] == pytest.approx(prov["wall_time_s"] + prov["previous"]["wall_time_s"], abs=2e-3)


def test_resume_before_the_first_checkpoint_starts_over(tmp_path):
    """A run killed before it wrote a checkpoint (simulated: its outputs without checkpoints/) resumes
    from the start and ends as an uninterrupted run, ParaView collection included."""
    cfg = case(tmp_path, n_traj=2, frames=3, every=1)
    ref = tmp_path / "ref"
    assert run_sciml("run", str(cfg), "--out", str(ref)).returncode == 0
    out = tmp_path / "killed"
    assert run_sciml("run", str(cfg), "--out", str(out)).returncode == 0
    shutil.rmtree(out / "checkpoints")  # what a kill after the last frame but before any checkpoint leaves
    (out / "metrics.json").unlink()
    res = run_sciml("resume", str(out))
    assert res.returncode == 0, res.stderr
    assert np.array_equal(read_dataset(ref)[0], read_dataset(out)[0])
    assert (out / "fields.pvd").read_text() == (ref / "fields.pvd").read_text()


def test_a_new_run_into_an_old_folder_leaves_nothing_of_the_old_run(tmp_path):
    out = tmp_path / "run"
    assert run_sciml("run", str(case(tmp_path)), "--out", str(out)).returncode == 0
    res = run_sciml("run", str(case(tmp_path)), "--out", str(out), "--set", "output.dataset=false",
                    "--set", "output.paraview_trajectories=0")
    assert res.returncode == 0, res.stderr
    assert not (out / "trajectories.h5").exists() and not (out / "fields.pvd").exists()


def test_more_paraview_trajectories_than_the_first_chunk_holds_is_rejected(tmp_path):
    res = validate(str(case(tmp_path)), "--set", "chunk_size=1")
    assert res.returncode == 2 and "output.paraview_trajectories: at most chunk_size = 1" in res.stderr


def test_a_launch_that_mpi_does_not_join_fails_clearly(tmp_path):
    """A process numbered 1 by the launcher (srun without MPI wiring) must not run the job alone."""
    env = child_env()
    env.update(SLURM_NTASKS="2", SLURM_PROCID="1")
    res = subprocess.run(sciml_cmd("run", str(case(tmp_path)), "--out", str(tmp_path / "run")), env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "MPI sees it alone" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_fixed_dt_that_blows_up_fails_instead_of_writing_nans(tmp_path):
    out = tmp_path / "run"
    res = run_sciml("run", str(case(tmp_path, n_traj=1, frames=3)), "--out", str(out),
                    "--set", "time.frame_dt=2", "--set", "time.dt=1.0")
    assert res.returncode == 1 and "no longer finite" in res.stderr and "time.dt" in res.stderr
    assert not (out / "metrics.json").exists()


@pytest.mark.mpi
def test_dataset_bitwise_identical_on_1_and_2_ranks(tmp_path):
    cfg = case(tmp_path, n_traj=5, ic="gaussian_random_field", frames=3, every=10)
    cfg.write_text(cfg.read_text().replace("length: 2*pi", "length: 1.0"))
    outs = {}
    for ranks in (1, 2):
        out = tmp_path / f"r{ranks}"
        res = run_sciml("run", str(cfg), "--out", str(out), "--set", "physics.forcing.type=fno",
                        "--set", "time.warmup=0.15", ranks=ranks)
        assert res.returncode == 0, res.stderr
        outs[ranks] = read_dataset(out)[0]
        assert json.loads((out / "metrics.json").read_text())["world_size"] == ranks
    assert np.array_equal(outs[1], outs[2])


@pytest.mark.parametrize("overrides, message", [
    (["initial_condition={type: taylor_green, k: 4}"], "initial_condition.k: must be at most 3, below the Nyquist "
                                                        "wavenumber n/2 on a grid of n = 8"),
    (["physics.forcing={type: kolmogorov, k: 3}"], "physics.forcing.k: must be at most 2, below n/3"),
    (["initial_condition={type: sine_sum, max_wavenumber: 5}"], "initial_condition.max_wavenumber: must be at "
                                                                "most 3"),
])
def test_wavenumbers_the_grid_does_not_keep_are_refused(tmp_path, overrides, message):
    """At n = 8 a start at wavenumber 4 (Nyquist) is zero or aliased, a forcing at 3 is masked by the 2/3 rule."""
    path = case(tmp_path, n=8)
    res = validate(str(path), *[a for o in overrides for a in ("--set", o)])
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert validate(str(path), "--set", "initial_condition={type: taylor_green, k: 3}").returncode == 0


def test_the_dataset_records_the_step_taken(tmp_path):
    """A fixed dt of 0.03 in frames 0.1 apart is taken as 4 steps of 0.025: the file says 0.025 (and what
    was asked for)."""
    out = tmp_path / "run"
    res = run_sciml("run", str(case(tmp_path, n_traj=1, frames=2, dt=", dt: 0.03")), "--out", str(out),
                    "--set", "output.plots=false")
    assert res.returncode == 0, res.stderr
    _, attrs = read_dataset(out)
    assert attrs["dt"] == pytest.approx(0.025, rel=1e-12) and attrs["dt_requested"] == 0.03


def test_resume_refuses_a_configuration_changed_since_the_run_started(tmp_path):
    """Editing config.yaml between the processes of a run would mix two runs in one folder: refused with
    the keys that changed (exit 2); what is written (output.*) may change."""
    out = tmp_path / "run"
    assert run_sciml("run", str(case(tmp_path, n_traj=1, frames=2)), "--out", str(out)).returncode == 0
    config = out / "config.yaml"
    original = config.read_text()
    config.write_text(original.replace("viscosity: 0.001", "viscosity: 0.002"))
    res = run_sciml("resume", str(out))
    assert res.returncode == 2, res.stderr
    assert "physics.viscosity: changed since the run started (0.001 -> 0.002)" in res.stderr, res.stderr
    config.write_text(original.replace("plots: true", "plots: false"))
    res = run_sciml("resume", str(out))
    assert res.returncode == 0, res.stderr


def test_a_key_added_since_the_run_started_with_its_default_is_no_change(tmp_path):
    """A run started by an earlier version has no record of keys added since: at resume they hold their
    defaults (the earlier behaviour), which is not a change; a value other than the default is."""
    import json

    from sciml import cli
    from sciml.config import load_case

    out = tmp_path / "run"
    assert run_sciml("run", str(case(tmp_path, n_traj=1, frames=2)), "--out", str(out)).returncode == 0
    started = json.loads((out / cli._STARTED).read_text())
    assert started["time"].pop("stepper") == "rk4_cn"  # as if the key were new: its default
    (out / cli._STARTED).write_text(json.dumps(started))
    assert cli._changed_since_start(load_case(out / "config.yaml"), out) == []
    problems = cli._changed_since_start(load_case(out / "config.yaml", ["time.stepper=heun_cn"]), out)
    assert len(problems) == 1 and "time.stepper: changed since the run started ('rk4_cn' -> 'heun_cn')" in problems[0]
