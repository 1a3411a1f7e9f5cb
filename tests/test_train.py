"""pykinml-train end to end on a copy of the demo database: the three fidelity modes, the run directory,
checkpoints that load with weights_only=True, exact resume, fine-tuning from weights, and bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pykinml.cli.train import main as train_main
from pykinml.config import compose_config
from pykinml.demo import DEMO_DB
from pykinml.train import train

from .checks import user_error

torch.set_num_threads(1)

SMALL = ["model.neurons=[16]", "data.batch_size=48", "trainer.progress_bar=false", "logger=csv"]


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def demo_copy(tmp_path):
    """A private copy of the demo database (runs may add splits to it)."""
    path = tmp_path / "demo.db"
    shutil.copy(DEMO_DB, path)
    return path


@pytest.fixture
def run_train(capsys, tmp_path):
    """Run ``pykinml-train`` in-process with a private cache directory."""

    def run(*overrides: str) -> Result:
        code = train_main([*SMALL, f"cache_dir={tmp_path / 'cache'}", *overrides])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def keep_high_level_on_every_fifth(db) -> None:
    """Make gfn2 labels scarce, as in real multi-fidelity data: only structures with id % 5 == 0 keep them."""
    con = sqlite3.connect(db)
    level = con.execute("SELECT id FROM level WHERE name = 'gfn2'").fetchone()[0]
    con.execute("DELETE FROM label WHERE level_id = ? AND structure_id % 5 != 0", (level,))
    con.commit()
    con.close()


def test_console_script_single_fidelity_writes_a_complete_run_directory(demo_copy, tmp_path):
    """The installed ``pykinml-train`` trains on the database, writes the run directory and prints test errors."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "pykinml.cli.train", *SMALL, f"data.db={demo_copy}", "trainer.max_epochs=2",
               f"run_dir={run_dir}", f"cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test gfn2: energy RMSE" in done.stdout and "kcal/mol" in done.stdout
    for name in ("config.yaml", "metrics.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/metrics.csv"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["fidelity"] == "single" and metrics["levels"] == ["gfn2"] and metrics["epochs"] == 2
    for split in ("val", "test"):
        assert metrics[split]["gfn2/energy_rmse_kcal_mol"] > 0 and metrics[split]["gfn2/force_rmse_ev_a"] > 0
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    saved = checkpoint["pykinml"]
    assert saved["fidelity"] == "single" and saved["elements"] == ["H", "C", "N", "O"]
    assert saved["aev"]["radial_cutoff"] == 5.2 and len(saved["sae"][0]) == 4
    assert checkpoint["optimizer_states"] and checkpoint["pykinml_schedule"]["patience"] == 10
    assert "model.log_variance" not in checkpoint["state_dict"] and "weights.log_variance" in checkpoint["state_dict"]
    assert not list(tmp_path.glob("*.log")) and not (tmp_path / "outputs").exists()  # Hydra wrote nothing else


def test_training_lowers_the_errors(demo_copy, tmp_path):
    """Ten epochs of real training bring the validation energy and force errors well below those of epoch 0."""
    result = train(compose_config([*SMALL, f"data.db={demo_copy}", "trainer.max_epochs=10",
                                   f"run_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"]))
    rows = [row for row in csv.DictReader(open(result.run_dir / "logs" / "metrics.csv")) if row.get("val/gfn2/force_rmse_ev_a")]
    first, best = float(rows[0]["val/gfn2/force_rmse_ev_a"]), result.metrics["val"]["gfn2/force_rmse_ev_a"]
    assert best < 0.8 * first, (first, best)
    assert result.metrics["val"]["gfn2/energy_rmse_ev"] < 0.8 * float(rows[0]["val/gfn2/energy_rmse_ev"])


def test_multi_fidelity_trains_with_scarce_high_level_labels(demo_copy, tmp_path, run_train):
    """Chained multi-fidelity accepts structures without the high level; each level's metrics use its own labels."""
    keep_high_level_on_every_fifth(demo_copy)
    result = run_train(f"data.db={demo_copy}", "fidelity=multi", "trainer.max_epochs=2", f"run_dir={tmp_path / 'multi'}")
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    assert metrics["levels"] == ["gfn1", "gfn2"]
    for level in ("gfn1", "gfn2"):
        assert metrics["test"][f"{level}/energy_rmse_ev"] > 0 and metrics["test"][f"{level}/force_rmse_ev_a"] > 0
    assert "test gfn1:" in result.out and "test gfn2:" in result.out
    checkpoint = torch.load(tmp_path / "multi" / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(key.startswith("model.levels.1.") for key in checkpoint["state_dict"])  # the chained high network
    assert checkpoint["state_dict"]["weights.log_variance"].numel() == 4  # energy and forces of both levels


def test_delta_trains_on_the_level_difference(demo_copy, tmp_path, run_train):
    result = run_train(f"data.db={demo_copy}", "fidelity=delta", "trainer.max_epochs=2", f"run_dir={tmp_path / 'delta'}")
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "delta" / "metrics.json").read_text())
    assert "gfn2-gfn1/energy_rmse_kcal_mol" in metrics["test"] and "test gfn2-gfn1:" in result.out


def _state(path):
    checkpoint = torch.load(path, weights_only=True)
    return checkpoint["state_dict"], checkpoint["optimizer_states"][0]["state"], checkpoint["pykinml_schedule"]


def test_resume_is_exact(demo_copy, tmp_path):
    """Two epochs, stop, resume to four: the same weights, optimizer moments and schedule as four straight epochs.

    The plateau schedule has patience 0, so the learning rate changes within these epochs and the resumed run
    must carry the schedule's state (its best value and bad-epoch count) exactly.
    """
    common = [*SMALL, f"data.db={demo_copy}", f"cache_dir={tmp_path / 'cache'}", "scheduler.patience=0", "scheduler.threshold=0.5"]
    train(compose_config([*common, "trainer.max_epochs=4", f"run_dir={tmp_path / 'straight'}"]))
    train(compose_config([*common, "trainer.max_epochs=2", f"run_dir={tmp_path / 'split'}"]))
    last = tmp_path / "split" / "checkpoints" / "last.ckpt"
    first_half = _state(last)[0]
    train(compose_config([*common, "trainer.max_epochs=4", f"ckpt_path={last}"]))  # run_dir: the checkpoint's
    straight, resumed = _state(tmp_path / "straight" / "checkpoints" / "last.ckpt"), _state(last)
    assert not torch.equal(first_half["model.levels.0.networks.0.0.weight"], resumed[0]["model.levels.0.networks.0.0.weight"])
    for key, value in straight[0].items():
        assert torch.equal(value, resumed[0][key]), key
    for index, moments in straight[1].items():
        for name, value in moments.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(resumed[1][index][name])), (index, name)
    assert straight[2] == resumed[2]
    rates = [float(row["lr-Adam/pg1"]) for row in csv.DictReader(open(tmp_path / "straight" / "logs" / "metrics.csv")) if row.get("lr-Adam/pg1")]
    assert min(rates) < max(rates), rates  # the schedule did act
    metrics = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert metrics["epochs"] == 4


def test_last_checkpoint_is_the_last_epoch_even_when_it_is_not_the_best(demo_copy, tmp_path):
    """With a learning rate of 0 the validation loss never improves after epoch 0: best.ckpt stays there, but
    last.ckpt must follow every epoch (a resume continues from it), and a resumed run keeps the first log."""
    common = [*SMALL, f"data.db={demo_copy}", f"cache_dir={tmp_path / 'cache'}", "optim=sgd", "optim.lr=0",
              "optim.momentum=0", "optim.nesterov=false", "scheduler=none"]
    run = train(compose_config([*common, "trainer.max_epochs=3", f"run_dir={tmp_path / 'run'}"])).run_dir
    assert torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["epoch"] == 0
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 2
    first_log = (run / "logs" / "metrics.csv").read_text()
    train(compose_config([*common, "trainer.max_epochs=4", f"ckpt_path={last}"]))
    assert torch.load(last, weights_only=True)["epoch"] == 3
    assert (run / "logs" / "metrics.csv").read_text() == first_log
    resumed = list(run.glob("logs/resumed-*/metrics.csv"))
    assert len(resumed) == 1 and any(row.get("epoch") == "3" for row in csv.DictReader(open(resumed[0])))


def test_init_from_starts_a_new_run_from_trained_weights(demo_copy, tmp_path):
    """Energy-only training, then a force-training run from its weights (SGD with lr 0 keeps them unchanged)."""
    common = [*SMALL, f"data.db={demo_copy}", f"cache_dir={tmp_path / 'cache'}"]
    first = train(compose_config([*common, "model.forces=false", "trainer.max_epochs=2", f"run_dir={tmp_path / 'energy'}"]))
    source = first.run_dir / "checkpoints" / "last.ckpt"
    train(compose_config([*common, f"init_from={source}", "optim=sgd", "optim.lr=0", "optim.momentum=0", "optim.nesterov=false",
                          "trainer.max_epochs=1", f"run_dir={tmp_path / 'forces'}"]))
    before = torch.load(source, weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "forces" / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["pykinml"]["config"]["model"]["forces"] is True
    for key, value in before.items():
        if key.startswith("model."):
            assert torch.equal(value, after["state_dict"][key]), key
    assert after["state_dict"]["weights.log_variance"].numel() == 2  # new task weights: energy and forces


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["data.levels=[ccsd]"], ["level 'ccsd' is not in the database", "gfn1"]),
        (["data.names=[CH4,benzene]"], ["data.names", "'benzene'"]),
        (["data.names=[zz%]"], ["no structure", "zz%"]),
        (["aev.elements=[H,C]"], ["structure id", "which is not among the AEV elements ['H', 'C']"]),
        (["fidelity=single", "data.levels=[gfn1,gfn2]"], ["fidelity=single trains on one level"]),
        (["model.neurns=[3]"], ["unknown config key 'model.neurns'"]),
        (["optim.name=rmsprop"], ["optim.name=rmsprop", "adam"]),
        (["init_from=/nonexistent/best.ckpt"], ["init_from=/nonexistent/best.ckpt", "no such checkpoint"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(demo_copy, tmp_path, run_train, overrides, fragments):
    before = digest(demo_copy)
    result = run_train(f"data.db={demo_copy}", f"run_dir={tmp_path / 'run'}", *overrides)
    user_error(result, *fragments, program="pykinml-train")
    assert not (tmp_path / "run").exists()
    assert digest(demo_copy) == before


def test_delta_names_the_structures_missing_a_level(demo_copy, tmp_path, run_train):
    keep_high_level_on_every_fifth(demo_copy)
    result = run_train(f"data.db={demo_copy}", "fidelity=delta", f"run_dir={tmp_path / 'run'}")
    user_error(result, "fidelity=delta needs both gfn1 and gfn2", "ids 1, 2, 3, 4, 6", program="pykinml-train")
    assert not (tmp_path / "run").exists()


def test_checkpoint_and_run_directory_conflicts_are_refused(demo_copy, tmp_path, run_train):
    run_dir = tmp_path / "run"
    assert run_train(f"data.db={demo_copy}", "trainer.max_epochs=1", f"run_dir={run_dir}").code == 0
    saved = {path: digest(path) for path in run_dir.rglob("*") if path.is_file()}
    last = run_dir / "checkpoints" / "last.ckpt"
    user_error(run_train(f"data.db={demo_copy}", f"run_dir={run_dir}"), "already holds a run", "ckpt_path=", program="pykinml-train")
    user_error(run_train(f"data.db={demo_copy}", f"ckpt_path={last}", "model.neurons=[8]"),
               "incompatible checkpoint", "model.neurons", program="pykinml-train")
    user_error(run_train(f"data.db={demo_copy}", f"ckpt_path={last}", "fidelity=multi"),
               "incompatible checkpoint", "fidelity=single", program="pykinml-train")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    user_error(run_train(f"data.db={demo_copy}", f"init_from={tmp_path / 'junk.ckpt'}", f"run_dir={tmp_path / 'other'}"),
               "not a readable pykinml checkpoint", program="pykinml-train")
    assert {path: digest(path) for path in run_dir.rglob("*") if path.is_file()} == saved
    assert not (tmp_path / "other").exists()


def test_a_cache_with_other_aev_parameters_is_refused(demo_copy, tmp_path, run_train):
    """A cache directory whose contents do not match its key (other AEV constants) is never used."""
    assert run_train(f"data.db={demo_copy}", "trainer.max_epochs=1", f"run_dir={tmp_path / 'first'}").code == 0
    (manifest,) = (tmp_path / "cache").glob("aev/*/manifest.json")
    data = json.loads(manifest.read_text())
    data["aev"]["radial_cutoff"] = 4.6
    manifest.write_text(json.dumps(data))
    result = run_train(f"data.db={demo_copy}", "trainer.max_epochs=1", f"run_dir={tmp_path / 'second'}")
    user_error(result, "was built with other AEV parameters", "pykinml-cache clear", program="pykinml-train")


def test_budget_schedule_ends_at_min_lr_whatever_the_budget(demo_copy, tmp_path):
    """scheduler=budget decays geometrically from optim.lr to min_lr over max_epochs (no max_time)."""
    result = train(compose_config([*SMALL, f"data.db={demo_copy}", "scheduler=budget", "scheduler.min_lr=1e-5",
                                   "optim.lr=1e-3", "trainer.max_epochs=4", f"run_dir={tmp_path / 'run'}",
                                   f"cache_dir={tmp_path / 'cache'}"]))
    rates = [float(row["lr-Adam/pg1"]) for row in csv.DictReader(open(result.run_dir / "logs" / "metrics.csv")) if row.get("lr-Adam/pg1")]
    assert rates == pytest.approx([1e-3 * (1e-2) ** (k / 4) for k in range(4)], rel=1e-6)
    state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["pykinml_schedule"]
    assert state["fraction"] == 1.0
    assert state["base"] == [1e-3, 1e-3]


def test_force_training_needs_forces(tmp_path, run_train):
    """A database without forces: model.forces=true is refused with advice, model.forces=false trains."""
    import ase.io

    from pykinml.db import ImportOptions, LevelKeys, create_split, import_file, open_engine

    frames = ase.io.read(Path(__file__).resolve().parents[1] / "examples" / "data" / "demo.extxyz", ":120")
    path = tmp_path / "energies.extxyz"
    ase.io.write(path, frames)
    db = tmp_path / "energies.db"
    engine = open_engine(db, create=True)
    import_file(engine, path, ImportOptions(levels=[LevelKeys.parse("gfn2=gfn2_energy")]))
    create_split(engine, "default", fractions=(0.8, 0.1, 0.1), seed=0)
    user_error(run_train(f"data.db={db}", f"run_dir={tmp_path / 'run'}"), "model.forces=true but no training structure has forces",
               "model.forces=false", program="pykinml-train")
    result = run_train(f"data.db={db}", "model.forces=false", "trainer.max_epochs=1", f"run_dir={tmp_path / 'run'}")
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "gfn2/energy_rmse_ev" in metrics["test"] and "gfn2/force_rmse_ev_a" not in metrics["test"]


def test_learning_rate_floor_and_early_stopping_end_a_run(demo_copy, tmp_path):
    """A plateau schedule that halves every epoch stops at its floor; early stopping stops on no improvement."""
    common = [*SMALL, f"data.db={demo_copy}", f"cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=50"]
    floor = train(compose_config([*common, "scheduler.patience=0", "scheduler.threshold=10", "scheduler.factor=0.1",
                                  "scheduler.lr_floor=2e-6", f"run_dir={tmp_path / 'floor'}"]))
    # lr 1e-3 falls tenfold per epoch (no epoch improves by the 1000 % threshold): below 2e-6 after 3 steps
    assert floor.metrics["epochs"] < 8, floor.metrics["epochs"]
    stopped = train(compose_config([*common, "early_stopping.patience=1", "early_stopping.min_delta=1e6",
                                    f"run_dir={tmp_path / 'early'}"]))
    assert stopped.metrics["epochs"] <= 3, stopped.metrics["epochs"]


def test_a_config_directory_of_your_own(demo_copy, tmp_path, run_train):
    """--config-dir adds data options and presets next to the packaged ones."""
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "experiment").mkdir()
    (tmp_path / "conf" / "data" / "mine.yaml").write_text(
        f"db: {demo_copy}\nlevels: [gfn1]\nnames: [CH4, H2O]\nsplit: mysplit\nsplit_fractions: [0.6, 0.2, 0.2]\n"
        "batch_size: 16\neval_batch_size: 64\n"
    )
    (tmp_path / "conf" / "experiment" / "tiny.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: 1\n")
    code = train_main([*SMALL, "--config-dir", str(tmp_path / "conf"), "data=mine", "experiment=tiny",
                       f"run_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"])
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["levels"] == ["gfn1"] and metrics["epochs"] == 1
    from pykinml.db import open_engine, select_structures

    chosen = select_structures(open_engine(demo_copy), split="mysplit", forces=False)  # created from the fractions
    assert len(chosen) == 200 and set(chosen.names) == {"CH4", "H2O"}
    (tmp_path / "conf" / "data" / "typo.yaml").write_text(f"db: {demo_copy}\nlevels: [gfn1]\nbatch_size: 16\nbatch_sise: 16\n")
    user_error(run_train("--config-dir", str(tmp_path / "conf"), "data=typo", f"run_dir={tmp_path / 'other'}"),
               "unknown config key 'data.batch_sise'", program="pykinml-train")


def test_installed_package_trains_from_any_directory(tmp_path):
    """A non-editable install (the built wheel) finds its config tree and demo database from elsewhere."""
    root = Path(__file__).resolve().parents[1]
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(root)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("pykinml-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    code = ("import pykinml, sys; from pykinml.cli.train import main; assert pykinml.__file__.startswith(sys.argv[1]), pykinml.__file__;"
            " sys.exit(main(sys.argv[2:]))")
    done = subprocess.run([sys.executable, "-c", code, str(site), *SMALL, "trainer.max_epochs=1", "run_dir=run",
                           f"cache_dir={tmp_path / 'cache'}"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test gfn2: energy RMSE" in done.stdout
    assert (elsewhere / "run" / "checkpoints" / "best.ckpt").is_file()
    assert json.loads((elsewhere / "run" / "metrics.json").read_text())["levels"] == ["gfn2"]


def test_high_level_repeats_show_scarce_labels_more_often(demo_copy, tmp_path):
    """data.high_level_repeats=3: every training structure with the high level appears three times per epoch."""
    import numpy as np

    from pykinml.aev import AEVParams
    from pykinml.data.module import PotentialDataModule
    from pykinml.data.training import load_training_data
    from pykinml.db import open_engine
    from pykinml.tasks import MultiFidelityTask

    keep_high_level_on_every_fifth(demo_copy)
    levels = ["gfn1", "gfn2"]
    data = load_training_data(open_engine(demo_copy), levels, MultiFidelityTask.target_specs(levels), "multi",
                              None, "default", [0.8, 0.1, 0.1], 0, True)
    module = PotentialDataModule(data, AEVParams.original(data.elements()), forces=True, high_level_repeats=3,
                                 cache_dir=str(tmp_path / "cache"), progress=False)
    train_rows = data.rows["train"]
    high = train_rows[data.targets.energy_mask[1][train_rows]]
    assert 0 < high.size < train_rows.size / 3
    rows, counts = np.unique(module.epoch_rows("train"), return_counts=True)
    assert set(rows) == set(train_rows)
    assert all(counts[np.isin(rows, high)] == 3) and all(counts[~np.isin(rows, high)] == 1)
    assert list(module.epoch_rows("val")) == list(data.rows["val"])  # evaluation sees every structure once
    loader = module.train_dataloader()
    assert sum(len(batch_rows) for batch_rows in loader.batch_sampler) == train_rows.size + 2 * high.size
