"""The scot case end to end through the CLI: metrics and files, data-parallel equivalence, resume, bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import numpy as np
import torch
import yaml

from support import child_env, run_sciml, validate

TINY = Path(__file__).parent / "inputs" / "scot_tiny.yaml"

KEYS = ("accuracy_gain", "efficiency_gain", "median_rel_l1_scot_pretrained", "median_rel_l1_scot_scratch",
        "median_rel_l1_fno", "median_rel_l1_seen_lead_times", "median_rel_l1_unseen_lead_times",
        "median_rel_l1_rollout")


def assert_reported(metrics: dict, key: str) -> None:
    """Finite, except an efficiency gain the FNO's flat fit makes unbounded (null, flagged)."""
    if key == "efficiency_gain" and metrics.get("efficiency_gain_unbounded"):
        assert metrics[key] is None
    else:
        assert key in metrics and math.isfinite(metrics[key]), key


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One complete run of the tiny case, every checkpoint kept."""
    base = tmp_path_factory.mktemp("scot")
    case = base / "tiny.yaml"
    shutil.copy(TINY, case)
    out = base / "run"
    res = run_sciml("run", str(case), "--out", str(out), "--set", "output.keep_checkpoints=true", timeout=600)
    assert res.returncode == 0, res.stderr
    return base, out


def test_tiny_case_writes_every_metric_plot_and_field(tiny_run):
    _, out = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in KEYS:
        assert_reported(metrics, key)
    models = {(r["model"], r["M"]) for r in metrics["results"]}
    assert models == {(m, n) for m in ("scot_pretrained", "scot_scratch", "fno") for n in (2, 4)}
    assert all(0 < r["rel_l1_final"] < 1000 for r in metrics["results"])
    assert (out / "plots" / "sample_efficiency.png").stat().st_size > 0
    pieces = [out / p for p in re.findall(r'file="([^"]+)"', (out / "fields.pvd").read_text())]
    assert len(pieces) == 5 and all(p.is_file() for p in pieces)  # one per snapshot
    import vtk

    reader = vtk.vtkXMLImageDataReader()
    reader.SetFileName(str(pieces[-1]))
    reader.Update()
    names = {reader.GetOutput().GetPointData().GetArrayName(i)
             for i in range(reader.GetOutput().GetPointData().GetNumberOfArrays())}
    assert {"velocity_truth", "velocity_scot_pretrained", "velocity_scot_scratch", "velocity_fno"} <= names
    blob = torch.load(out / "pretrained.pt", weights_only=False)
    from sciml.solvers.scot import ScOT, ScOTConfig

    model = ScOT(ScOTConfig(**blob["config"]))
    model.load_state_dict(blob["model"])  # the pretrained checkpoint is a complete, loadable model


@pytest.mark.parametrize("launcher", ["mpiexec", "torchrun"])
def test_two_ranks_train_the_same_parameters_as_one(tiny_run, tmp_path, launcher):
    """Data-parallel pretraining (2 ranks, same global batch) matches the serial run within 1e-6 (float32)."""
    base, serial = tiny_run
    case = base / "tiny.yaml"
    out = tmp_path / "ddp"
    args = ("run", str(case), "--out", str(out), "--set", "finetune.scratch=false", "--set", "baseline.enabled=false")
    if launcher == "mpiexec":
        res = run_sciml(*args, ranks=2, timeout=600)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "sciml", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=child_env())
    assert res.returncode == 0, res.stderr + res.stdout
    a = torch.load(serial / "pretrained.pt", weights_only=False)["model"]
    b = torch.load(out / "pretrained.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    from sciml.solvers.scot import ScOT, ScOTConfig

    torch.manual_seed(0)  # the case's seed: the initial parameters
    init = ScOT(ScOTConfig(**torch.load(serial / "pretrained.pt", weights_only=False)["config"])).state_dict()
    assert max(float((a[k] - init[k]).abs().max()) for k in a) > 1e-4  # training moved them: not vacuous
    m1 = json.loads((serial / "metrics.json").read_text())
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["median_rel_l1_scot_pretrained"] == pytest.approx(m1["median_rel_l1_scot_pretrained"], rel=1e-4)
    assert "on 2 rank(s)" in (out / "log.txt").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_resume_from_a_checkpoint_in_the_middle_of_a_training_gives_the_same_results(tiny_run, tmp_path):
    _, ref = tiny_run
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / "metrics.json").unlink()
    # a checkpoint written in the middle of a downstream training (after the pretraining)
    middle = None
    for path in sorted((run / "checkpoints").glob("step_*.pt")):
        state = torch.load(path, weights_only=False)["state"]
        current = state.get("current")
        if current and current["key"] == "scot_scratch_M4" and 0 < current["trainer"]["step"] < 3:
            middle = path
            break
    assert middle is not None
    shutil.copy(middle, run / "checkpoints" / "latest.pt")
    res = run_sciml("resume", str(run), timeout=600)
    assert res.returncode == 0, res.stderr
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_s"} for r in rows]  # noqa: E731
    assert strip(a["results"]) == strip(b["results"])
    assert "resuming at step" in (run / "log.txt").read_text()


@pytest.mark.parametrize("source", ["earlier_run", "poseidon_folder"])
def test_fine_tuning_from_a_given_checkpoint_skips_pretraining(tiny_run, tmp_path, source):
    """model.checkpoint: our own pretrained.pt, or a Poseidon folder (4 channels there, 2 here: new embedding and recovery)."""
    from poseidon_fixture import POSEIDON_TINY, write_poseidon_folder

    base, ref = tiny_run
    if source == "earlier_run":
        checkpoint = ref / "pretrained.pt"
    else:
        checkpoint = tmp_path / "poseidon"
        write_poseidon_folder(checkpoint, dict(POSEIDON_TINY, num_channels=4, num_out_channels=4))
    out = tmp_path / "run"
    res = run_sciml("run", str(base / "tiny.yaml"), "--out", str(out), "--set", f"model.checkpoint={checkpoint}",
                    "--set", "finetune.scratch=false", "--set", "baseline.enabled=false", timeout=600)
    assert res.returncode == 0, res.stderr
    log = (out / "log.txt").read_text()
    assert "pretraining:" not in log and not (out / "pretrained.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert {r["model"] for r in metrics["results"]} == {"scot_pretrained"}
    if source == "earlier_run":  # the same pretrained weights and fine-tuning as the full run: the same errors
        full = json.loads((ref / "metrics.json").read_text())
        assert metrics["median_rel_l1_scot_pretrained"] == pytest.approx(full["median_rel_l1_scot_pretrained"],
                                                                         rel=1e-5)
    else:
        assert "embedding and recovery replaced" in log


def test_four_channel_data_trains_on_the_velocity_and_keeps_a_four_channel_checkpoint_whole(tiny_run, tmp_path):
    """snapshots.four_channels: (rho, u, v, p) = (1, u, v, 0), the released checkpoints' layout. rho and p are
    constants of the data: the loss and the errors measure the velocity (a relative error against p = 0 has no
    scale: it used to make the loss ~1e11), and every prediction carries rho = 1, p = 0, also into the rollout."""
    from poseidon_fixture import POSEIDON_TINY, write_poseidon_folder

    base, _ = tiny_run
    out = tmp_path / "four"
    res = run_sciml("run", str(base / "tiny.yaml"), "--out", str(out), "--set", "snapshots.four_channels=true",
                    timeout=600)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in KEYS:
        assert_reported(metrics, key)
    # the identity map scores about 100 % on the velocity; a trained model may not score orders of magnitude above
    assert all(0 < r["rel_l1_final"] < 1000 for r in metrics["results"])
    assert 0 < metrics["median_rel_l1_rollout"] < 1000

    checkpoint = tmp_path / "poseidon"  # a released model's layout, four channels: fine-tuned whole
    write_poseidon_folder(checkpoint, dict(POSEIDON_TINY, num_channels=4, num_out_channels=4))
    out = tmp_path / "poseidon_run"
    res = run_sciml("run", str(base / "tiny.yaml"), "--out", str(out), "--set", f"model.checkpoint={checkpoint}",
                    "--set", "snapshots.four_channels=true", "--set", "baseline.enabled=false", timeout=600)
    assert res.returncode == 0, res.stderr
    assert "embedding and recovery replaced" not in (out / "log.txt").read_text()
    # a resume checks the folder's files, not the folder, for changes since the run started
    inputs = json.loads((out / ".inputs_started.json").read_text())["files"]
    assert {(r["key"], Path(r["path"]).name) for r in inputs} >= {("model.checkpoint", "config.json"),
                                                                  ("model.checkpoint", "model.safetensors")}
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["median_rel_l1_scot_pretrained"])
    # "from scratch" is the checkpoint's architecture, not the case's model: block
    assert metrics["scot_scratch_parameters"] == metrics["scot_pretrained_parameters"]
    # it sees rho and p normalised as in Poseidon's pretraining, the velocity scaled by the data
    from sciml.solvers.scot.checkpoint import POSEIDON_FLUID_MEAN, POSEIDON_FLUID_STD

    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["state"]
    scaler = state["kept"]["scot_pretrained"]["scaler"]
    for c in (0, 3):
        assert float(scaler["mean"][c]) == pytest.approx(POSEIDON_FLUID_MEAN[c])
        assert float(scaler["std"][c]) == pytest.approx(POSEIDON_FLUID_STD[c])
    assert float(scaler["std"][1]) != pytest.approx(POSEIDON_FLUID_STD[1])


def test_predictions_carry_the_constant_channels_and_the_metric_reads_the_velocity():
    from sciml.cases.scot import _Scaled
    from sciml.solvers.scot.data import ChannelScaler, relative_l1

    fields = torch.randn(6, 4, 8, 8)
    fields[:, 0], fields[:, 3] = 1.0, 0.0
    scaler = ChannelScaler.fit(fields)
    class Model(torch.nn.Module):  # any (x, t) -> y of the fields' shape
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 1)

        def forward(self, x, t):
            return self.conv(x) + t.view(-1, 1, 1, 1)

    with torch.no_grad():
        y = _Scaled(Model(), scaler, {0: 1.0, 3: 0.0})(fields, torch.zeros(6))
    assert torch.all(y[:, 0] == 1.0) and torch.all(y[:, 3] == 0.0)
    target = torch.randn(6, 4, 8, 8)
    assert torch.allclose(relative_l1(y, target, [[1, 2]]), relative_l1(y[:, 1:3], target[:, 1:3]))


def test_early_stopping_keeps_the_weights_with_the_lowest_validation_error(tiny_run, tmp_path):
    """finetune/baseline.validate_every with data.validation: the kept weights are those of the lowest
    validation error. With the test set as the validation set, each training's final test error is then exactly
    the lowest validation error it logged, whatever step that was."""
    base, _ = tiny_run
    case = yaml.safe_load((base / "tiny.yaml").read_text())
    case["data"]["validation"] = case["data"]["test"]
    case["n_validation"] = case["n_test"]
    # a learning rate far too high: the errors jump about, so the lowest often comes before the last step
    case["finetune"].update(validate_every=1, steps=6, lr=0.3, lr_scratch=0.3)
    case["baseline"].update(validate_every=2, steps=6, lr=0.3)
    path = base / "tiny_validation.yaml"
    path.write_text(yaml.safe_dump(case))
    out = tmp_path / "run"
    res = run_sciml("run", str(path), "--out", str(out), "--set", "output.keep_checkpoints=true", timeout=600)
    assert res.returncode == 0, res.stderr
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert {r["model"] for r in results} == {"scot_pretrained", "scot_scratch", "fno"}
    for r in results:
        steps = [step for step, _ in r["validation_errors"]]
        assert steps == ([0, 1, 2, 3, 4, 5, 6] if r["model"] != "fno" else [0, 2, 4, 6])
        lowest = min(error for _, error in r["validation_errors"])
        assert r["rel_l1_final"] == pytest.approx(lowest, rel=1e-6)
        assert dict(r["validation_errors"])[r["best_step"]] == lowest
    assert any(r["best_step"] < 6 for r in results)  # weights of an earlier step were restored

    # killed in the middle of a training: the resumed run keeps the same validation record and weights
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    (resumed / "metrics.json").unlink()
    middle = next(p for p in sorted((resumed / "checkpoints").glob("step_*.pt"))
                  if (c := torch.load(p, weights_only=False)["state"].get("current"))
                  and c["key"] == "scot_scratch_M2" and c["trainer"]["step"] == 4)
    shutil.copy(middle, resumed / "checkpoints" / "latest.pt")
    res = run_sciml("resume", str(resumed), timeout=600)
    assert res.returncode == 0, res.stderr
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_s"} for r in rows]  # noqa: E731
    assert strip(json.loads((resumed / "metrics.json").read_text())["results"]) == strip(results)


def test_early_stopping_without_a_validation_dataset_is_rejected(tmp_path):
    case = tmp_path / "case.yaml"
    shutil.copy(TINY, case)
    res = validate(str(case), "--set", "finetune.validate_every=10")
    assert res.returncode == 2
    assert "finetune.validate_every" in res.stderr and "data.validation" in res.stderr
    assert "Traceback" not in res.stderr


def test_m_star_outside_the_study_is_rejected_with_its_line(tmp_path):
    case = tmp_path / "bad.yaml"
    case.write_text(TINY.read_text().replace("m_star: 2", "m_star: 3"))
    res = validate(str(case))
    assert res.returncode == 2
    assert "bad.yaml:" in res.stderr and "finetune.m_star" in res.stderr and "Traceback" not in res.stderr


def test_a_dataset_file_too_small_for_the_study_is_rejected_before_any_work(tmp_path):
    """Its header is read at validation: no pretraining is spent before finding out."""
    import h5py

    for shape, problem in [((3, 9, 8, 8), "holds 3 trajectories, 4 are needed"),  # M up to 4
                           ((5, 4, 8, 8), "holds 4 frames, snapshots.n=5 every=1 need 5")]:
        data = tmp_path / f"small_{shape[0]}.h5"
        with h5py.File(data, "w") as h5:
            h5["vorticity"] = np.zeros(shape, np.float32)
        cfg = yaml.safe_load(TINY.read_text())
        cfg["data"]["train"] = {"path": str(data)}
        case = tmp_path / "case.yaml"
        case.write_text(yaml.safe_dump(cfg))
        res = validate(str(case), "--set", "finetune.augment=false", "--set", "baseline.augment=false")
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert f"data.train.path: {data} {problem}" in res.stderr, res.stderr


def test_augmenting_data_of_an_anisotropic_distribution_is_rejected(tmp_path):
    """Moved samples of Taylor-Green data would be solutions, but of another data set than the test's."""
    case = tmp_path / "case.yaml"
    shutil.copy(TINY, case)
    res = validate(str(case), "--set", "data.train.generate.initial_condition={type: taylor_green}")
    assert res.returncode == 2
    assert "finetune.augment" in res.stderr and "taylor_green" in res.stderr and "Traceback" not in res.stderr
    res = validate(str(case), "--set", "data.train.generate.initial_condition={type: taylor_green}",
                    "--set", "finetune.augment=false")
    assert res.returncode == 0, res.stderr


def test_a_checkpoint_that_is_not_a_model_is_refused_before_any_work(tiny_run, tmp_path):
    """model.checkpoint is read (without its weights) when the case is validated: a file that is not a
    pretrained.pt, a run's latest.pt, a Poseidon folder with a broken file, or a model that cannot run at the
    case's resolution exit 2 naming the key, before any data is generated."""
    from poseidon_fixture import POSEIDON_TINY, write_poseidon_folder

    base, ref = tiny_run
    broken = tmp_path / "poseidon"
    write_poseidon_folder(broken, dict(POSEIDON_TINY, num_channels=4, num_out_channels=4))
    (broken / "model.safetensors").write_bytes(b"junk")
    cases = [(str(TINY), "not a pretrained.pt of a scot run (not a file of torch.save)"),
             (str(ref / "checkpoints" / "latest.pt"), "not a pretrained.pt of a scot run (it holds"),
             (str(broken), "model.safetensors: not a safetensors file")]
    for checkpoint, message in cases:
        res = validate(str(base / "tiny.yaml"), "--set", f"model.checkpoint={checkpoint}")
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert f"--set model.checkpoint={checkpoint}: model.checkpoint: " in res.stderr
    # our pretrained.pt (2 x 2 patches, 2 levels: sides multiple of 4) where the case's model runs at 6²
    res = validate(str(base / "tiny.yaml"), "--set", f"model.checkpoint={ref / 'pretrained.pt'}",
                    "--set", "model.image_size=6", "--set", "model.depths=[1]", "--set", "model.num_heads=[2]",
                    "--set", "model.window_size=3")
    assert res.returncode == 2 and "multiples of patch_size * 2**(levels-1) = 4, got 6 x 6" in res.stderr, res.stderr


def test_a_global_batch_smaller_than_the_ranks_is_refused_at_start(tiny_run, tmp_path):
    """Known before any work from the launch: exit 2 naming each training's batch_size (the override here),
    also where only the last, partial batch of an epoch is too small."""
    base, _ = tiny_run
    out = tmp_path / "run"
    res = run_sciml("run", str(base / "tiny.yaml"), "--out", str(out), "--set", "baseline.batch_size=1", ranks=2,
                    timeout=300)
    assert res.returncode == 2, res.stderr
    assert ("--set baseline.batch_size=1: baseline.batch_size: a batch of 1 samples (the last of 12 at M = 2 in "
            "batches of 1) cannot be shared by 2 ranks" in res.stderr), res.stderr
    assert res.stderr.count("cannot be shared") == 1 and not out.exists()  # no folder made for a run that cannot go
    # a batch of 11 leaves a last batch of 1 of the 12 samples at M = 2 (6 pairs per trajectory)
    res = run_sciml("run", str(base / "tiny.yaml"), "--out", str(out), "--set", "finetune.batch_size=11", ranks=2,
                    timeout=300)
    assert res.returncode == 2 and "finetune.batch_size: a batch of 1 samples (the last of 12 at M = 2" in res.stderr


def test_a_snapshot_stride_that_leaves_only_the_identity_is_refused(tiny_run):
    base, _ = tiny_run
    res = validate(str(base / "tiny.yaml"), "--set", "snapshots.stride=9")
    assert res.returncode == 2 and "snapshots.stride: expected at most snapshots.n - 1" in res.stderr, res.stderr


def test_every_cross_key_problem_is_reported_at_once():
    res = validate(str(TINY), "--set", "finetune.m_star=5", "--set", "evaluation.rollout_stride=3")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert "--set finetune.m_star=5: finetune.m_star: must be one of finetune.m_values" in lines[0], lines
    assert any(line.startswith("--set evaluation.rollout_stride=3: evaluation.rollout_stride: must divide")
               for line in lines), lines
