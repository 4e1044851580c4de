"""The sfno case end to end through the CLI: every metric key, the run folder, resume from a checkpoint."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from support import run_sciml

TINY = """\
kind: sfno
seed: 0
n_test: 4
data:
  train:
    cache_dir: {cache}
    generate:
      n_trajectories: 6
      chunk_size: 6
      dtype: float32
      grid: {{n: 32, length: 1.0}}
      physics: {{viscosity: 1.0e-3, forcing: {{type: fno}}}}
      initial_condition: {{type: gaussian_random_field}}
      time: {{n_frames: 7, frame_dt: 0.2}}
  test:
    cache_dir: {cache}
    generate:
      seed: 1000
      n_trajectories: 4
      chunk_size: 4
      dtype: float64
      grid: {{n: 32, length: 1.0}}
      physics: {{viscosity: 1.0e-3, forcing: {{type: fno}}}}
      initial_condition: {{type: gaussian_random_field}}
      time: {{n_frames: 28, frame_dt: 0.05}}
window: {{frame_dt: 0.2, start: 0, n_in: 3, n_out: 5}}
model: {{modes: [2, 4, 4], width: 4, n_layers: 1, time_padding: 2}}
baseline: {{n_layers: 1}}
training: {{resolution: 16, epochs: 2, batch_size: 3, augment: true}}
finetune: {{n_trajectories: 3, steps: 4, latent_refine: 2}}
output: {{keep_checkpoints: true}}
"""

KEYS = ("rel_l2_train_res", "rel_l2_zero_shot_2x", "rel_l2_before_ft", "rel_l2_after_ft", "residual_hm1_before_ft",
        "residual_hm1_after_ft", "estimator_error_spearman", "finetune_s_per_traj", "solver_s_per_traj", "rel_l2_fno",
        "rel_l2_persistence", "estimator_error_spearman_after_ft")


ESTIMATOR = Path(__file__).resolve().parents[2] / "benchmarks" / "sfno_estimator.py"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run of the tiny case (its generated datasets cached in the folder's ``cache/``)."""
    tmp = tmp_path_factory.mktemp("sfno")
    case = tmp / "tiny.yaml"
    case.write_text(TINY.format(cache=tmp / "cache"))
    out = tmp / "run"
    res = run_sciml("run", str(case), "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stderr
    return out


def test_tiny_case_writes_every_metric_and_resumes_from_an_epoch_checkpoint(tiny_run, tmp_path):
    out = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in KEYS:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["n_finetune"] == 3 and metrics["n_estimator"] == 4 and metrics["zero_shot_grid"] == 32 and metrics["train_grid"] == 16
    assert [k for k in metrics if k.startswith("rel_l2_zero_shot")] == ["rel_l2_zero_shot_2x"]
    assert metrics["finetune_frame_dt"] == 0.05 and metrics["residual_floor_ratio"] > 0
    assert "20 frames 0.05 apart (the test set's stored spacing)" in (out / "log.txt").read_text()
    for f in ("plots/loss_curves.png", "plots/vorticity_finetune.png", "plots/finetune_residual.png", "fields.pvd",
              "checkpoints/latest.pt", "provenance.json"):
        assert (out / f).is_file(), f
    assert (out / "fields.pvd").read_text().count("<DataSet") == 5  # the target frames of trajectory 0

    # the checkpoint after epoch 1 of the SFNO holds everything needed to continue
    first = sorted((out / "checkpoints").glob("step_*.pt"))[0]
    ckpt = torch.load(first, weights_only=False)
    sfno_state = ckpt["state"]["trainers"]["sfno"]
    assert sfno_state["epoch"] == 1 and set(sfno_state) >= {"model", "optimizer", "scheduler", "generator",
                                                             "torch_rng", "history"}
    assert sfno_state["scheduler"]["last_epoch"] == 2  # two batches of 3 windows per epoch
    # resume from there in a copy of the folder: the same numbers as the uninterrupted run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    shutil.copy(first, again / "checkpoints" / "latest.pt")
    (again / "metrics.json").unlink()
    res = run_sciml("resume", str(again), timeout=600)
    assert res.returncode == 0, res.stderr
    resumed = json.loads((again / "metrics.json").read_text())
    for key, value in metrics.items():
        if not key.endswith("_s") and not key.endswith("_s_per_traj"):
            assert resumed[key] == value, key
    assert "sfno: resuming after epoch 1/2" in (again / "log.txt").read_text()
    assert "estimator on 1 more test trajectories" in (out / "log.txt").read_text()
    assert "augmentation: 64 symmetries of the equation on the 16² grid" in (out / "log.txt").read_text()


def test_zero_shot_metric_is_named_by_the_ratio_of_the_grids(tiny_run, tmp_path):
    """Generated at 32², trained at 8²: ``rel_l2_zero_shot_4x`` (the datasets come from the tiny run's cache)."""
    case = tmp_path / "tiny.yaml"
    case.write_text(TINY.format(cache=tiny_run.parent / "cache"))
    out = tmp_path / "run"
    res = run_sciml("run", str(case), "--out", str(out), "--set", "training.resolution=8", "--set",
                    "baseline.enabled=false", "--set", "finetune.enabled=false", "--set", "output.plots=false",
                    timeout=600)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["zero_shot_grid"] == 32 and metrics["train_grid"] == 8
    assert [k for k in metrics if k.startswith("rel_l2_zero_shot")] == ["rel_l2_zero_shot_4x"]
    assert math.isfinite(metrics["rel_l2_zero_shot_4x"])
    assert "data: reusing cached dataset" in (out / "log.txt").read_text()


def test_mcwilliams_finetuning_on_coarse_frames_warns_that_the_estimator_is_blind(tmp_path):
    """McWilliams data fine-tuned at frames 0.05 apart on 32² (DESIGN.md: the estimator needs <= 0.025 on
    >= 128²): the run goes on as before and says so in its log; metrics.json holds the spacing used."""
    text = TINY.format(cache=tmp_path / "cache").replace("length: 1.0", "length: 2*pi")
    text = text.replace("forcing: {type: fno}", "forcing: {type: none}")
    text = text.replace("initial_condition: {type: gaussian_random_field}", "initial_condition: {type: mcwilliams}")
    case = tmp_path / "mcwilliams.yaml"
    case.write_text(text)
    out = tmp_path / "run"
    res = run_sciml("run", str(case), "--out", str(out), "--set", "baseline.enabled=false", "--set",
                    "finetune.steps=1", "--set", "output.plots=false", timeout=600)
    assert res.returncode == 0, res.stderr
    log = (out / "log.txt").read_text()
    assert ("warning: fine-tuning frames 0.05 apart on 32² (the test set's stored spacing and the generation grid): "
            "McWilliams data need at most 0.025 on at least 128²") in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finetune_frame_dt"] == 0.05 and math.isfinite(metrics["residual_floor_ratio"])


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # the mean shell: zero on every trajectory
def test_estimator_benchmark_reads_a_finished_run(tiny_run, capsys):
    spec = importlib.util.spec_from_file_location("benchmark_sfno_estimator", ESTIMATOR)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main([str(tiny_run), "--n", "3"]) == 0  # it checks that its shells add up to the estimator
    printed = capsys.readouterr().out
    assert "3 test trajectories at 32², 20 frames 0.05 apart" in printed and "Spearman(estimator, error)" in printed


def test_validation_names_the_problem(tmp_path):
    case = tmp_path / "bad.yaml"
    case.write_text(TINY.format(cache=tmp_path / "cache").replace("frame_dt: 0.05", "frame_dt: 0.03"))
    res = run_sciml("validate", str(case))
    assert res.returncode == 2
    assert "must be a whole multiple of the dataset's frame_dt" in res.stderr


ON_PATHS = """\
kind: sfno
n_test: 4
data:
  train: {{path: {train}}}
  test: {{path: {test}}}
window: {{frame_dt: 0.2, start: 0, n_in: 3, n_out: 5}}
model: {{modes: [2, 4, 4], width: 4, n_layers: 1, time_padding: 2}}
training: {{resolution: 16}}
finetune:
  n_trajectories: {n_ft}
"""


def fake_dataset(path: Path, n_traj: int, n_t: int, n: int, frame_dt: float) -> Path:
    """A file with the header of a trajectory dataset (what validation reads), zero vorticity."""
    import h5py

    with h5py.File(path, "w") as h5:
        h5["vorticity"] = torch.zeros(n_traj, n_t, n, n).numpy()
        h5["time"] = (torch.arange(n_t) * frame_dt).numpy()
        h5.attrs["frame_dt"] = frame_dt
    return path


def test_path_datasets_are_checked_against_their_files_before_the_run(tmp_path):
    """The sizes the run reads from a ``path`` dataset are validated against the file's header: the
    fine-tuned trajectories against n_test, n_test and n_train against the file's trajectories, the
    window against its frames and spacing, the training grid against its grid; exit 2 and the line."""
    train = fake_dataset(tmp_path / "train.h5", 6, 8, 32, 0.2)
    test = fake_dataset(tmp_path / "test.h5", 4, 29, 32, 0.05)
    case = tmp_path / "case.yaml"
    case.write_text(ON_PATHS.format(train=train, test=test, n_ft=3))
    assert run_sciml("validate", str(case)).returncode == 0
    case.write_text(ON_PATHS.format(train=train, test=test, n_ft=5))
    # `run` fails before it makes the run folder, reads data or trains
    for args in (("validate", str(case)), ("run", str(case), "--out", str(tmp_path / "run"))):
        res = run_sciml(*args)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip() == f"{case}:10: finetune.n_trajectories: must be at most n_test 4 (got 5)"
    assert not (tmp_path / "run").exists()
    case.write_text(ON_PATHS.format(train=train, test=test, n_ft=3))
    for override, expected in [
        ("n_test=5", ["n_test: must be at most the 4 trajectories of data.test.path (got 5)"]),
        ("training.n_train=7", ["training.n_train: must be at most the 6 trajectories of data.train.path (got 7)"]),
        ("window.n_out=6", ["window.n_out: window.start=0, n_in=3, n_out=6 at stride 1 needs 9 frames, "
                            "data.train.path holds 8 (got 6)",
                            "window.n_out: window.start=0, n_in=3, n_out=6 at stride 4 needs 33 frames, "
                            "data.test.path holds 29 (got 6)"]),
        ("window.frame_dt=0.1", ["window.frame_dt: must be a whole multiple of the dataset's frame_dt 0.2 "
                                 "(data.train.path) (got 0.1)"]),
        ("training.resolution=64", ["training.resolution: must be at most the grid 32 of data.train.path (got 64)",
                                    "training.resolution: must be at most the grid 32 of data.test.path (got 64)"]),
    ]:
        res = run_sciml("validate", str(case), "--set", override)
        assert res.returncode == 2, (override, res.stderr)
        assert res.stderr.strip().splitlines() == [f"--set {override}: {line}" for line in expected], res.stderr
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = [1.0]
    res = run_sciml("validate", str(case), "--set", f"data.test.path={tmp_path / 'other.h5'}")
    assert res.returncode == 2 and "data.test.path: not a trajectory dataset" in res.stderr, res.stderr


def test_augmentation_needs_isotropic_initial_conditions(tmp_path):
    case = tmp_path / "bad.yaml"
    text = TINY.format(cache=tmp_path / "cache")
    case.write_text(text.replace("initial_condition: {type: gaussian_random_field}\n      time: {n_frames: 7",
                                 "initial_condition: {type: taylor_green}\n      time: {n_frames: 7", 1))
    res = run_sciml("validate", str(case))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "training.augment: needs isotropic initial conditions" in res.stderr and "'taylor_green'" in res.stderr
    assert run_sciml("validate", str(case), "--set", "training.augment=false").returncode == 0


def test_output_modes_and_init_accept_their_words_and_reject_others(tmp_path):
    from sciml.cases.sfno import Model, output_modes_of

    case = tmp_path / "tiny.yaml"
    case.write_text(TINY.format(cache=tmp_path / "cache"))
    assert run_sciml("validate", str(case), "--set", "model.output_modes=full").returncode == 0
    res = run_sciml("validate", str(case), "--set", "model.output_modes=fool")
    assert res.returncode == 2 and "model.output_modes" in res.stderr and "Traceback" not in res.stderr
    # 'full': every mode below Nyquist of the latent period (n_out + padding) and the training grid
    assert output_modes_of(Model(time_padding=4, output_modes="full"), 20, 64) == (11, 31, 31)
    assert output_modes_of(Model(), 20, 64) is None  # the SFNO then uses the body's modes
    assert run_sciml("validate", str(case), "--set", "model.output_init=random").returncode == 0
    res = run_sciml("validate", str(case), "--set", "model.output_init=zero")
    assert res.returncode == 2 and "model.output_init" in res.stderr and "Traceback" not in res.stderr
    res = run_sciml("validate", str(case), "--set", "model.input_path=frames", "--set", "model.input_skip=true")
    assert res.returncode == 2 and "input_skip needs input_path 'temporal'" in res.stderr
