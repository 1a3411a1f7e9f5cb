"""The scripts in examples/ run end to end as a user runs them, on the bundled demo database, with a tiny
budget (one epoch, 16-neuron networks): each is a subprocess in a temporary directory that must exit 0,
leave its run directory with checkpoints and print finite numbers where its output promises them."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = ["--epochs", "1", "--neurons", "16"]
FLOAT = r"([-+]?\d+\.\d+(?:e[-+]?\d+)?)"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="module")
def environment(workdir) -> dict:
    """The examples' environment: one private AEV cache they share (most select the same structures), no SLURM."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SLURM_") and key not in ("PYKINML_EXAMPLE_RUN_DIR", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    env["PYKINML_CACHE_DIR"] = str(workdir / "cache")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: what ``srun`` sets for a job of 2 nodes x 1 task (per task: SLURM_PROCID, SLURM_NODEID)
SLURM_JOB = {"SLURM_JOB_ID": "987654", "SLURM_JOB_NAME": "pykinml-test", "SLURM_NNODES": "2", "SLURM_NTASKS": "2",
             "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODELIST": "127.0.0.1", "SLURM_LOCALID": "0", "MASTER_ADDR": "127.0.0.1"}


#: the example runs each test reads (run_model predicts with the model train_single_fid trains)
NEEDS = {
    "test_train_single_fid": {"single"}, "test_run_model": {"single", "run_model"}, "test_load_model_continues_and_fine_tunes": {"load"},
    "test_train_delta": {"delta"}, "test_train_multi_fid_with_scarce_high_level_labels": {"multi"},
    "test_train_multi_node_two_cpu_processes": {"ddp"}, "test_train_multi_node_under_slurm_two_nodes": {"slurm"},
}


@pytest.fixture(scope="module")
def examples(request, workdir, environment):
    """The examples the selected tests need, started at once and run two at a time (most of each run is
    importing torch and Lightning, on one core). Futures by name, each resolving to the example's
    processes (one, or one per SLURM task)."""
    wanted = set().union(*(NEEDS.get(item.originalname, set()) for item in request.session.items))

    def run(name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        task = subprocess.Popen([sys.executable, str(EXAMPLES / name), *args], cwd=workdir, env=env or environment,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        task.out, task.err = task.communicate(timeout=300)
        return task

    def slurm() -> list[subprocess.Popen]:
        """Two tasks of a 2-node SLURM job on this machine, as srun starts them."""
        job = {**environment, **SLURM_JOB, "MASTER_PORT": str(free_port())}
        tasks = [subprocess.Popen([sys.executable, str(EXAMPLES / "train_multi_node.py"), *TINY], cwd=workdir,
                                  env={**job, "SLURM_PROCID": str(r), "SLURM_NODEID": str(r)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
        for task in tasks:
            task.out, task.err = task.communicate(timeout=300)
        return tasks

    starts = {  # the longest first; run_model last, as it waits for train_single_fid's model
        "single": lambda: run("train_single_fid.py", *TINY, "--run-dir", "single"),
        "slurm": slurm,
        # batches of 8: some lack N on one rank, whose N network then gets no gradient (DDP must cope)
        "ddp": lambda: run("train_multi_node.py", *TINY, "--devices", "2", "--run-dir", "ddp", "data.batch_size=8"),
        "multi": lambda: run("train_multi_fid.py", *TINY, "--run-dir", "multi"),
        "delta": lambda: run("train_delta.py", *TINY, "--run-dir", "delta"),
        "load": lambda: run("load_model.py", "--epochs", "1", "--more-epochs", "1", "--finetune-epochs", "1",
                            "--neurons", "16", "--workdir", "load"),
        "run_model": lambda: jobs["single"].result() and run("run_model.py", "--model", "single"),
    }
    pool = ThreadPoolExecutor(max_workers=2)
    jobs: dict = {}
    for name, start in starts.items():
        if name in wanted:
            jobs[name] = pool.submit(start)
    yield jobs
    pool.shutdown(wait=True, cancel_futures=True)


def output(examples: dict, name: str) -> str:
    """The stdout of example ``name`` (rank 0's for SLURM tasks) after checking that each of its processes exited 0."""
    result = examples[name].result()
    for task in result if isinstance(result, list) else [result]:
        assert task.returncode == 0, (f"{' '.join(task.args[1:])} exited {task.returncode}\n"
                                      f"--- stdout\n{task.out[-3000:]}\n--- stderr\n{task.err[-3000:]}")
    return result[0].out if isinstance(result, list) else result.out


def numbers(pattern: str, text: str, count: int | None = None) -> list[tuple[float, ...]]:
    """Every match of ``pattern`` (FLOAT groups) in ``text`` as floats, each checked to be finite."""
    found = [tuple(float(x) for x in match) if isinstance(match, tuple) else (float(match),)
             for match in re.findall(pattern, text)]
    assert found, f"no line matches {pattern!r} in:\n{text}"
    if count is not None:
        assert len(found) == count, (pattern, found)
    assert all(math.isfinite(x) for values in found for x in values), found
    return found


def check_run_dir(run_dir: Path, forces: bool = True) -> dict:
    for name in ("config.yaml", "metrics.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), run_dir / name
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["pykinml"]["config"]["model"]["forces"] is forces
    return checkpoint


def test_train_single_fid(examples, workdir):
    out, run_dir = output(examples, "single"), workdir / "single"
    check_run_dir(run_dir)
    numbers(rf"energy RMSE {FLOAT} kcal/mol \({FLOAT} eV, {FLOAT} meV/atom\)", out, count=1)
    numbers(rf"force RMSE  {FLOAT} kcal/mol/Å \({FLOAT} eV/Å\)", out, count=1)
    assert "test gfn2: energy RMSE" in out  # train()'s own report
    assert f"run_model.py --model {run_dir.name}" in out


def test_run_model(examples):
    out = output(examples, "run_model")
    assert "molecule: C2H6O, 9 atoms" in out
    numbers(rf"gfn2 energy: {FLOAT} eV", out, count=1)
    numbers(rf"reference {FLOAT} eV: error {FLOAT} eV = {FLOAT} kcal/mol; force RMSE {FLOAT} eV/Å", out, count=1)
    numbers(r"\n\s+\d+\s+[A-Z][a-z]?" + rf"\s+{FLOAT}" * 3 + r"\s+\|" + rf"\s+{FLOAT}" * 3, out, count=9)
    (difference,) = numbers(rf"ASE calculator \(gfn2\): energy {FLOAT} eV, max \|F\| {FLOAT} eV/Å \(differs from predict\(\) by (\d\.\de[-+]\d+)\)", out)[0][2:]
    assert difference < 1e-8


def test_load_model_continues_and_fine_tunes(examples, workdir):
    out = output(examples, "load")
    energy_only = check_run_dir(workdir / "load" / "energy-only", forces=False)
    assert energy_only["epoch"] == 1  # one epoch, then one more on resuming (0-based index of the last)
    check_run_dir(workdir / "load" / "energy-only-forces", forces=True)
    rows = numbers(rf"\s+(\d+)\s+gfn2\s+{FLOAT} kcal/mol\s+{FLOAT} kcal/mol/Å", out, count=3)
    assert [int(row[0]) for row in rows] == [1, 2, 1]
    assert "(as it was)" in out and "(continued)" in out and "(fine-tuned)" in out


def test_train_delta(examples, workdir):
    out = output(examples, "delta")
    check_run_dir(workdir / "delta")
    assert "test gfn2-gfn1: energy RMSE" in out
    numbers(rf"gfn1 \+ delta: energy RMSE {FLOAT} kcal/mol, MAE {FLOAT} kcal/mol; force RMSE {FLOAT} eV/Å", out, count=1)
    numbers(rf"gfn1 forces alone: force RMSE {FLOAT} eV/Å", out, count=1)
    if importlib.util.find_spec("tblite") is not None:  # the calculator form with a real GFN1-xTB baseline
        numbers(rf"ASE calculator, GFN1-xTB \(tblite\) \+ delta model, same structure: energy {FLOAT} eV", out, count=1)


def test_train_multi_fid_with_scarce_high_level_labels(examples, workdir):
    out = output(examples, "multi")
    check_run_dir(workdir / "multi")
    assert (workdir / "multi-data.db").is_file()
    assert "gfn2 on 96 of 480 training structures and on all 60 val and 60 test structures" in out
    for level in ("gfn1", "gfn2"):
        numbers(rf"  {level}: energy RMSE {FLOAT} kcal/mol, force RMSE {FLOAT} kcal/mol/Å \({FLOAT} eV/Å\)", out, count=1)


def test_train_multi_node_two_cpu_processes(examples, workdir):
    out = output(examples, "ddp")
    check_run_dir(workdir / "ddp")
    assert "1 node(s) x 2 CPU process(es) = 2, started by Lightning" in out
    assert out.count("test gfn2: energy RMSE") == 1  # rank 0 alone reports
    numbers(rf"  gfn2: energy RMSE {FLOAT} kcal/mol, force RMSE {FLOAT} kcal/mol/Å \({FLOAT} eV/Å\)", out, count=1)


def test_train_multi_node_under_slurm_two_nodes(examples, workdir):
    """What ``srun`` does for a job of 2 nodes x 1 task, on this machine: one process per
    task with SLURM's variables; the script takes nodes and tasks per node from them and Lightning the ranks."""
    out = output(examples, "slurm")
    outputs = [task.out for task in examples["slurm"].result()]
    assert "2 node(s) x 1 CPU process(es) = 2, started by SLURM" in out and "run directory: runs/single-slurm-987654" in out
    assert outputs[1] == ""  # only rank 0 prints
    check_run_dir(workdir / "runs" / "single-slurm-987654")
    numbers(rf"  gfn2: energy RMSE {FLOAT} kcal/mol, force RMSE {FLOAT} kcal/mol/Å \({FLOAT} eV/Å\)", out, count=1)
