"""The nbody case end to end through the CLI: run folder and metrics, baselines, kill + resume,
validation errors, and the shipped presets."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import CASES, child_env, run_sciml, sciml_cmd, validate

TINY = """\
kind: nbody
seed: 5
data: {{n_train: 24, n_val: 8, n_test: 8, frame_in: 2, frame_out: 12}}
model: {{channels: 4, lmax: 1, layers: 1, n_radial: 4, radial_hidden: 8}}
training: {{epochs: {epochs}, batch_size: 8, lr: 1.0e-3, seed: 1}}
"""


def case(tmp_path: Path, epochs: int = 2, name: str = "nbody.yaml") -> Path:
    p = tmp_path / name
    p.write_text(TINY.format(epochs=epochs))
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A finished 6-epoch run of both products."""
    tmp = tmp_path_factory.mktemp("nbody")
    out = tmp / "ref"
    res = run_sciml("run", str(case(tmp, epochs=6)), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


def test_run_writes_metrics_plot_and_checkpoint(reference):
    metrics = json.loads((reference / "metrics.json").read_text())
    for key in ("test_mse_gaunt", "test_mse_cg", "test_mse_constant_velocity", "train_s_per_epoch_gaunt",
                "train_s_per_epoch_cg", "test_mse_linear_fit", "linear_fit_time", "best_epoch_gaunt"):
        assert isinstance(metrics[key], (int, float)) and metrics[key] >= 0, key
    assert metrics["horizon"] == pytest.approx(1.0)
    for f in ("plots/loss_curves.png", "checkpoints/latest.pt", "dataset.pt", "config.yaml", "provenance.json"):
        assert (reference / f).is_file(), f
    assert json.loads((reference / "provenance.json").read_text())["status"] == "finished"


def test_constant_velocity_baseline_matches_the_data(reference):
    import torch

    from sciml.solvers.nbody.train import constant_velocity_mse, linear_mse

    data = torch.load(reference / "dataset.pt", weights_only=False)
    test = data["test"]
    expected = float(((test.pos + test.vel * 1.0 - test.target) ** 2).mean())
    metrics = json.loads((reference / "metrics.json").read_text())
    assert metrics["test_mse_constant_velocity"] == pytest.approx(expected, rel=1e-12)
    assert constant_velocity_mse(test) == pytest.approx(expected, rel=1e-12)
    # EGNN's "Linear" baseline: t* is the least-squares time on the training set
    t_fit = metrics["linear_fit_time"]
    assert linear_mse(data["train"], t_fit) <= constant_velocity_mse(data["train"])
    assert metrics["test_mse_linear_fit"] == pytest.approx(linear_mse(test, t_fit), rel=1e-12)
    assert len(data["train"]) == 24 and len(data["val"]) == 8 and test.pos.shape == (8, 5, 3)


def test_sigkill_then_resume_gives_identical_metrics(tmp_path, reference):
    out = tmp_path / "killed"
    proc = subprocess.Popen(sciml_cmd("run", str(case(tmp_path, epochs=6)), "--out", str(out)), env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoints" / "latest.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert ckpt.exists(), "no checkpoint before the kill"
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    res = run_sciml("resume", str(out))
    assert res.returncode == 0, res.stderr
    assert "resumed after epoch" in (out / "log.txt").read_text()
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for key in ("test_mse_gaunt", "test_mse_cg", "val_mse_gaunt", "best_epoch_cg", "test_mse_constant_velocity"):
        assert a[key] == b[key], key


def test_invalid_config_is_reported_before_running(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("kind: nbody\nmodel: {products: [gaunt, clebsch]}\ndata: {frame_in: 40, frame_out: 30}\n")
    res = validate(str(p))
    assert res.returncode == 2
    assert "model.products" in res.stderr
    assert f"{p}:3: data.frame_out: must be after frame_in (got 40 -> 30)" in res.stderr.splitlines()
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("name", ["nbody_cpu.yaml", "nbody_full.yaml"])
def test_shipped_presets_are_valid(name):
    from sciml.config import load_case

    case = load_case(CASES / name)
    assert case.kind == "nbody" and case.config.model.products == ["gaunt", "cg"]


def test_two_ranks_train_the_same_network_as_one(tmp_path, reference):
    """Data-parallel training (mpiexec -n 2, the same global batches) ends where the serial run does."""
    import torch

    out = tmp_path / "mpi"
    res = run_sciml("run", str(case(tmp_path, epochs=6)), "--out", str(out), ranks=2)
    assert res.returncode == 0, res.stderr
    serial = torch.load(reference / "checkpoints" / "latest.pt", weights_only=False)["state"]["model"]
    parallel = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["state"]["model"]
    worst = max(float((serial[k] - parallel[k]).abs().max()) for k in serial)
    assert worst <= 1e-5, worst  # float32, 18 Adam steps: summation order only
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (reference, out))
    for key in ("test_mse_gaunt", "test_mse_cg"):
        assert b[key] == pytest.approx(a[key], rel=1e-3), key
    assert "on 2 rank(s)" in (out / "log.txt").read_text()


def test_a_training_batch_smaller_than_the_ranks_is_refused_at_start(tmp_path):
    """24 samples in batches of 7 leave a last batch of 3: 4 ranks cannot share it; known at launch."""
    out = tmp_path / "run"
    res = run_sciml("run", str(case(tmp_path)), "--out", str(out), "--set", "training.batch_size=7", ranks=4,
                    timeout=300)
    assert res.returncode == 2, res.stderr
    assert ("--set training.batch_size=7: training.batch_size: the smallest training batch (3 of data.n_train = 24 "
            "in batches of 7) cannot be shared by 4 ranks" in res.stderr), res.stderr
    assert not (out / "checkpoints").exists()

