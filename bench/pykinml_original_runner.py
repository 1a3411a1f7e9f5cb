"""Train the ORIGINAL PyKinML 1.1.2 on C5H5 energies + forces and time it (the reference for benchmarks).

Standalone: imports only the original ``pykinml`` (1.1.2), aevmod, torch, numpy (through them) and the
standard library, never this project's package, and is meant to be run with the python of the separate
virtualenv that ``bench/pykinml_original_env.py`` makes (``bench/.venv-pykinml112``). It removes its own
folder and this repository from ``sys.path``, works in a scratch directory, and checks that the
``pykinml`` it imported is the installed 1.1.2. ::

    bench/.venv-pykinml112/bin/python bench/pykinml_original_runner.py --out OUT.json \
        [--epochs 2] [--config shipped|best] [--max-structures 500] [--threads 2|example] [--fw 0.5]

What it runs: exactly what the original's ``examples/train_single_fid.py`` does, with force training
switched on as in its ``examples/train_multi_fid.py`` (``floss=True``, ``fw=0.5``, fixed weights):
``args = prepper.parse_arguments_list()`` (its defaults), then AEV (16, 8, 8), cutoffs [5.2, 3.8] Å,
beta 0.95, ``my_neurons = [48, 24, 12, 1]`` with gaussian/gaussian/gaussian/identity per element
(C and H; the AEV is 224 long: 224-48-24-12-1, no biases: ``load_train_objs`` passes ``biases=False``),
``input_data_type='sqlite'``, fidelity 1 of ``C5H5.db``, the mask ``sample_tvt.txt``,
``tvt = [ntrain, nvalid, 0]`` (the example: 2000 + 48 of the 2048 train/valid structures; the 64 test
structures come from the mask), ``tr_batch_size = 50`` (validation and test batches keep the original's
default of 10), Adam lr 1e-3, ReduceLROnPlateau, seeds [0, 1], ``save_every = 1``, CPU (no DDP);
then ``prepper.prep_data(args, fid=1)`` and ``trainer.spawned_trainer('cpu', args, 0)``.

``--max-structures N`` (default 500; 0 = all 2048) writes a copy of the mask holding the first N
train/valid lines and all 64 test lines, and splits the N as the example splits 2048
(``nvalid = round(N * 48 / 2048)``, at least 1).

Configurations
    ``shipped``  the original as it is: ``trainer.spawned_trainer`` calls
                 ``torch.autograd.set_detect_anomaly(True)`` before training, so every training,
                 validation and test step runs under autograd anomaly detection.
    ``best``     the same, with anomaly detection off: ``torch.autograd.set_detect_anomaly`` is replaced
                 by a version that always switches it off (the original has no option for it). It
                 changes no number, only the speed.

Threads: ``--threads 2`` (default) calls ``torch.set_num_threads(2)``. ``--threads example`` applies the
example's own rule instead (``num_cores`` = 4; if ``2 * num_cores > mp.cpu_count()`` then
``torch.set_num_threads(int(cpu_count / 2))``, else torch's default): 1 thread on a 2-core machine. The
JSON records ``torch.get_num_threads()`` as training saw it.

Shims for torch 2.13 (monkeypatched here at import time, before pykinml is imported; nothing in the
installed package is edited; none changes a number):
    * ``torchvision``: ``prepper.py`` does ``from torchvision import transforms`` and ``MyTrainDataset``
      builds ``transforms.Compose([transforms.ToTensor()])`` that it never uses. If torchvision is not
      installed, a stub module with those two names is put in ``sys.modules`` (``ToTensor`` raises if
      ever called).
    * ``ReduceLROnPlateau(..., verbose=True)``: ``prepper.prep_model`` passes ``verbose``, which torch
      removed (it only printed learning-rate changes). Its ``__init__`` is wrapped to drop the argument
      (the class itself is kept, so pickled checkpoints still name the torch class).
    * ``torch.load``: since torch 2.6 it defaults to ``weights_only=True``, which refuses the original's
      own checkpoints (they pickle the optimizer, the scheduler and numpy arrays). It is wrapped to
      default to ``weights_only=False``; an explicit ``weights_only=`` is respected.

Timings (``time.perf_counter``, wrapping the original's own functions):
    ``prep``  ``prepper.prep_data``: total, and inside it the database read (``data.sqldb_parse_xyz``),
              AEVs (``Data_pes.xyz_to_aev_db``), Jacobians (``Data_pes.xyz_to_daev_db``: aevmod
              ``eval_Jac`` and the original's list/padding loops), the train/test tensor files
              (``prep_training_data``/``prep_testing_data``: build and ``torch.save``), and the SAE fit.
    ``load``  ``prepper.load_train_objs`` (``torch.load`` of those files, DataLoaders, model, optimizer).
    ``cat``   the ``prepper.cat_data`` calls at the start of ``Trainer.train`` (batches -> tensors).
    epochs    every ``Trainer._run_epoch`` call (train, valid, test; the train one includes the
              optimizer steps, the valid one the scheduler step), with the RMSEs it prints.
Training throughput is training structures / seconds of the train ``_run_epoch`` calls; ``steady``
leaves out epoch 0 (warm-up) when there are 2 or more epochs, ``best_epoch`` is the fastest of those. The original prints its errors in
kcal/mol (energies: per structure; forces: per Cartesian component, kcal/mol/Å); the JSON has them as
printed and converted to eV (``ase.units``). Run it on an otherwise idle machine: on 2 cores any other
load distorts every timing; the JSON records the load average before and after, and each epoch's process
CPU seconds next to its wall seconds (about 2x wall when 2 threads had the machine to themselves) and
the CPU seconds every other process used meanwhile (``other_cpu_seconds``, from ``/proc/stat``: near 0 in
a clean run). With 2 OpenMP threads on 2 cores, one other busy process makes torch's threads spin-wait
for each other: wall AND process CPU time then grow several-fold, so a high ``cpu_seconds`` alone does
not prove the work was intrinsic.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _sanitize_sys_path() -> None:
    """Drop this folder, the repository and the current directory from sys.path (never import /work/main);
    the virtualenv's own folders (it lives in bench/ by default) stay."""
    prefix = Path(sys.prefix).resolve()
    kept = []
    for entry in sys.path:
        try:
            resolved = Path(entry or ".").resolve()
        except OSError:
            continue
        in_venv = resolved == prefix or prefix in resolved.parents
        if entry in ("", ".") or (not in_venv and (resolved == REPO or REPO in resolved.parents)):
            continue
        kept.append(entry)
    sys.path[:] = kept


_sanitize_sys_path()

import argparse  # noqa: E402
import atexit  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from importlib.metadata import version  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "pykinml"
EXAMPLE_NTRAIN, EXAMPLE_NVALID = 2000, 48


# ----------------------------------------------------------------------------------------------- shims
def install_shims() -> list[str]:
    """Apply the torch 2.13 compatibility shims (see the module docstring); return what was applied."""
    import torch

    applied = []
    try:
        import torchvision  # noqa: F401
    except ImportError:
        torchvision = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")

        class Compose:
            def __init__(self, transforms):
                self.transforms = transforms

            def __call__(self, x):
                for t in self.transforms:
                    x = t(x)
                return x

        class ToTensor:
            def __call__(self, pic):
                raise NotImplementedError("torchvision stub: pykinml 1.1.2 never calls ToTensor")

        transforms.Compose, transforms.ToTensor = Compose, ToTensor
        torchvision.transforms = transforms
        torchvision.__spec__ = None
        sys.modules["torchvision"] = torchvision
        sys.modules["torchvision.transforms"] = transforms
        applied.append("torchvision stub (transforms.Compose/ToTensor, unused)")

    rop = torch.optim.lr_scheduler.ReduceLROnPlateau
    if "verbose" not in inspect.signature(rop.__init__).parameters:
        original_init = rop.__init__

        @functools.wraps(original_init)
        def init_without_verbose(self, *args, verbose=None, **kwargs):
            original_init(self, *args, **kwargs)

        rop.__init__ = init_without_verbose
        applied.append("ReduceLROnPlateau: verbose= dropped")

    if "weights_only" in inspect.signature(torch.load).parameters:
        original_load = torch.load

        @functools.wraps(original_load)
        def load(*args, **kwargs):
            if kwargs.get("weights_only") is None:
                kwargs["weights_only"] = False
            return original_load(*args, **kwargs)

        torch.load = load
        applied.append("torch.load: weights_only=False by default")
    return applied


def disable_anomaly_detection() -> None:
    """'best': make the original's torch.autograd.set_detect_anomaly(True) switch it off instead."""
    import torch

    original = torch.autograd.set_detect_anomaly

    class set_detect_anomaly_off(original):
        def __init__(self, mode, check_nan=True):
            super().__init__(False, check_nan)

    torch.autograd.set_detect_anomaly = set_detect_anomaly_off


# ----------------------------------------------------------------------------------------------- helpers
class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


_METRIC = re.compile(r"\b(train|valid|test) (MAE|RMSE|Linf|FMAE|FRMSE|FLinf):\s+(\S+)")


def _metrics(text: str) -> dict:
    found = {}
    for _tvs, name, value in _METRIC.findall(text):
        found[name] = float(value)
    return found


def _machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used so far (Linux /proc/stat; NaN elsewhere)."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def subset_mask(mask: Path, max_structures: int, out: Path) -> tuple[Path, int]:
    """Write the first ``max_structures`` train/valid lines and every test line of ``mask`` to ``out``."""
    lines = mask.read_text().splitlines()
    pool = [ln for ln in lines if ln.split()[1] == "2"]
    test = [ln for ln in lines if ln.split()[1] == "-1"]
    if max_structures <= 0 or max_structures >= len(pool):
        return mask, len(pool)
    out.write_text("\n".join(pool[:max_structures] + test) + "\n")
    return out, max_structures


class Timer:
    """Accumulates wall time of wrapped callables under names."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.failed: dict[str, str] = {}

    def wrap(self, owner, attribute: str, name: str):
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            except BaseException as error:  # the original swallows some (e.g. failed Jacobians): note them
                self.failed[name] = f"{type(error).__name__}: {error}"
                raise
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(owner, attribute, timed)


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--config", choices=("shipped", "best"), default="best")
    parser.add_argument("--max-structures", type=int, default=500,
                        help="train/valid structures taken from the mask (0 = all 2048); the 64 test ones are kept")
    parser.add_argument("--threads", default="2", help="torch threads, or 'example' for the example's rule")
    parser.add_argument("--fw", type=float, default=0.5, help="force weight (energy weight 1 - fw), as train_multi_fid.py")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with C5H5.db and sample_tvt.txt")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep-workdir", action="store_true")
    options = parser.parse_args(argv)
    out_path = Path(options.out).resolve()
    data_dir = options.data_dir.resolve()
    db, mask = data_dir / "C5H5.db", data_dir / "sample_tvt.txt"
    for path in (db, mask):
        if not path.exists():
            parser.error(f"missing {path}")

    workdir = (options.workdir or Path(tempfile.mkdtemp(prefix="pykinml112-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if options.workdir is None and not options.keep_workdir:  # also after a failure
        atexit.register(shutil.rmtree, workdir, True)
    os.chdir(workdir)  # the original writes its data, logs and checkpoints relative to the cwd

    shims = install_shims()
    import numpy as np
    import torch
    import torch.multiprocessing as mp
    from ase.units import kcal, mol

    import pykinml
    from pykinml import data as pk_data
    from pykinml import prepper as prep
    from pykinml import trainer

    pkfile = Path(pykinml.__path__[0]).resolve()
    prefix = Path(sys.prefix).resolve()
    if prefix not in pkfile.parents or version("pykinml") != "1.1.2":
        raise SystemExit(f"imported the wrong pykinml ({pkfile}, {version('pykinml')}): run with the "
                         f"python of bench/.venv-pykinml112 (bench/pykinml_original_env.py)")
    if options.config == "best":
        disable_anomaly_detection()

    # -------- the example's settings (examples/train_single_fid.py, forces as in train_multi_fid.py)
    mask_used, n_pool = subset_mask(mask, options.max_structures, workdir / "subset_tvt.txt")
    nvalid = EXAMPLE_NVALID if n_pool == EXAMPLE_NTRAIN + EXAMPLE_NVALID else max(1, round(n_pool * EXAMPLE_NVALID / 2048))
    ntrain = n_pool - nvalid
    saved_argv = sys.argv
    sys.argv = [saved_argv[0]]  # parse_arguments_list() reads sys.argv: give it none of ours
    try:
        args = prep.parse_arguments_list()
    finally:
        sys.argv = saved_argv
    args.epochs = options.epochs
    args.save_every = 1
    args.my_neurons = [48, 24, 12, 1]
    args.my_actfn = ["gaussian", "gaussian", "gaussian", "identity"]
    args.cuttoff_radius = [5.2, 3.8]
    args.aev_params = [16, 8, 8]
    args.beta = 0.95
    args.present_elements = ["C", "H"]
    args.input_data_fname = str(db)
    args.input_data_type = "sqlite"
    args.trtsid_name = [str(mask_used)]
    args.fidlevel = 1
    args.pre_saved = False
    args.tvt = [ntrain, nvalid, 0]
    args.tr_batch_size = 50
    args.floss = True
    args.fw = options.fw
    args.optimize_force_weight = False
    args.randomseed = [0, 1]
    args.savenm = "my_model_" + str(args.randomseed[0]) + "_" + str(args.randomseed[1])
    args.ddp = False

    # -------- threads
    maxthr = mp.cpu_count()
    example_threads = int(maxthr / 2) if 2 * args.num_cores > maxthr else torch.get_num_threads()
    if options.threads == "example":
        if 2 * args.num_cores > maxthr:
            args.num_cores = int(maxthr / 2)
            torch.set_num_threads(args.num_cores)
    else:
        torch.set_num_threads(int(options.threads))

    # -------- instrumentation (timing wrappers around the original's functions; no behaviour change)
    timer = Timer()
    timer.wrap(prep, "prep_data", "prep_total")
    timer.wrap(pk_data, "sqldb_parse_xyz", "db_read")
    timer.wrap(pk_data.Data_pes, "xyz_to_aev_db", "aev")
    timer.wrap(pk_data.Data_pes, "xyz_to_daev_db", "jacobian")
    timer.wrap(pk_data.Data_pes, "prep_training_data", "train_files")
    timer.wrap(pk_data.Data_pes, "prep_testing_data", "test_files")
    timer.wrap(prep, "sae_calculator", "sae_fit")
    timer.wrap(prep, "load_train_objs", "load")
    timer.wrap(prep, "cat_data", "cat")
    timer.wrap(trainer.Trainer, "train", "train_total")

    epochs = []
    original_run_epoch = trainer.Trainer._run_epoch

    def run_epoch(self, epoch, data, ids, nmols, tvs):
        captured = io.StringIO()
        structures = int(sum(e.shape[0] for e in data["engs"]))
        anomaly = torch.is_anomaly_enabled()
        threads = torch.get_num_threads()
        start, cpu_start, busy_start = time.perf_counter(), time.process_time(), _machine_busy_seconds()
        with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
            result = original_run_epoch(self, epoch, data, ids, nmols, tvs)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        other_cpu_seconds = _machine_busy_seconds() - busy_start - cpu_seconds
        epochs.append({"epoch": epoch, "set": tvs, "structures": structures, "batches": len(data["engs"]),
                       "seconds": seconds, "cpu_seconds": cpu_seconds, "other_cpu_seconds": other_cpu_seconds,
                       "structures_per_second": structures / seconds,
                       "anomaly_detection": anomaly, "threads": threads,
                       "kcal_per_mol": _metrics(captured.getvalue())})
        return result

    trainer.Trainer._run_epoch = run_epoch

    # -------- run it as examples/train_single_fid.py's main() does (CPU branch)
    loadavg_before = os.getloadavg()
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.float64)
    prep.prep_data(args, fid=args.fidlevel)
    if "jacobian" in timer.failed or "jacobian" not in timer.seconds:
        raise SystemExit(f"the original computed no AEV Jacobians: {timer.failed.get('jacobian')}")
    args.pre_saved = True
    args.data_path = args.savenm
    trainer.spawned_trainer("cpu", args, 0)
    total = time.perf_counter() - t0

    # -------- summarize
    to_ev = 1.0 / (mol / kcal)

    def summary_of(tvs):
        rows = [e for e in epochs if e["set"] == tvs]
        if not rows:
            return {}
        steady_rows = rows[1:] if len(rows) >= 2 else rows
        steady_s = sum(r["seconds"] for r in steady_rows)
        steady_n = sum(r["structures"] for r in steady_rows)
        last = rows[-1]["kcal_per_mol"]
        return {
            "structures": rows[0]["structures"],
            "epoch_seconds": [r["seconds"] for r in rows],
            "epoch_cpu_seconds": [r["cpu_seconds"] for r in rows],
            "epoch_other_cpu_seconds": [r["other_cpu_seconds"] for r in rows],
            "structures_per_second": [r["structures_per_second"] for r in rows],
            "steady_structures_per_second": steady_n / steady_s,
            "best_epoch_structures_per_second": max(r["structures_per_second"] for r in steady_rows),
            "steady_epochs": [r["epoch"] for r in steady_rows],
            "final_kcal_per_mol": last,
            "final_energy_rmse_ev": last["RMSE"] * to_ev if "RMSE" in last else None,
            "final_force_rmse_ev_per_a": last["FRMSE"] * to_ev if "FRMSE" in last else None,
        }

    prep_s = timer.seconds
    result = {
        "what": "original PyKinML 1.1.2 force training on C5H5 (examples/train_single_fid.py settings, floss)",
        "config": options.config,
        "anomaly_detection_during_training": sorted({e["anomaly_detection"] for e in epochs}),
        "shims": shims,
        "settings": {
            "aev_params": args.aev_params, "cutoffs": args.cuttoff_radius, "beta": args.beta,
            "neurons": args.my_neurons, "activations": args.my_actfn, "elements": args.present_elements,
            "tvt": args.tvt, "n_test_mask": sum(1 for ln in mask.read_text().splitlines() if ln.split()[1] == "-1"),
            "tr_batch_size": args.tr_batch_size, "vl_batch_size": args.vl_batch_size,
            "ts_batch_size": args.ts_batch_size, "floss": args.floss, "fw": args.fw, "epochs": args.epochs,
            "optimizer": args.optimizer, "learning_rate": args.learning_rate, "lrscheduler": args.lrscheduler,
            "randomseed": args.randomseed, "max_structures": options.max_structures,
            "mask": str(mask) if mask_used == mask else f"first {n_pool} train/valid lines + all test lines of {mask}",
            "database": str(db), "device": "cpu",
        },
        "threads": {"requested": options.threads, "torch_num_threads": torch.get_num_threads(),
                    "example_rule_would_set": example_threads, "cpu_count": os.cpu_count(),
                    "interop_threads": torch.get_num_interop_threads()},
        "prep": {
            "total_seconds": prep_s.get("prep_total"),
            "db_read_seconds": prep_s.get("db_read"),
            "aev_seconds": prep_s.get("aev"),
            "jacobian_seconds": prep_s.get("jacobian"),
            "aev_jacobian_seconds": prep_s.get("aev", 0.0) + prep_s.get("jacobian", 0.0),
            "tensor_files_seconds": prep_s.get("train_files", 0.0) + prep_s.get("test_files", 0.0),
            "sae_fit_seconds": prep_s.get("sae_fit"),
            "structures": n_pool + sum(1 for ln in mask.read_text().splitlines() if ln.split()[1] == "-1"),
        },
        "load_seconds": prep_s.get("load"),
        "cat_data_seconds": prep_s.get("cat"),
        "train_loop_total_seconds": prep_s.get("train_total"),
        "train": summary_of("train"),
        "valid": summary_of("valid"),
        "test": summary_of("test"),
        "epochs": epochs,
        "total_seconds": total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # other load on the machine distorts every timing here: check these (and cpu_seconds / seconds)
        "loadavg_before": loadavg_before,
        "loadavg_after": os.getloadavg(),
        "versions": {
            "pykinml": version("pykinml"), "aevmod": version("aevmod"), "torch": torch.__version__,
            "torch_scatter": version("torch-scatter"),
            "numpy": np.__version__, "ase": version("ase"), "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor(),
        },
        "pykinml_path": str(pkfile),
        "workdir": str(workdir) if options.keep_workdir or options.workdir else None,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    if not options.keep_workdir and options.workdir is None:
        os.chdir(tempfile.gettempdir())

    tr, vl = result["train"], result["valid"]
    print("\n==== pykinml 1.1.2 (original) force training, C5H5 ====", file=sys.stderr)
    print(f"config={options.config} anomaly={result['anomaly_detection_during_training']} "
          f"threads={torch.get_num_threads()} tvt={args.tvt} test={result['test'].get('structures')} "
          f"batch={args.tr_batch_size} epochs={args.epochs}", file=sys.stderr)
    p = result["prep"]
    print(f"prep: total {p['total_seconds']:.1f} s (AEV {p['aev_seconds']:.1f} s + Jacobian "
          f"{p['jacobian_seconds']:.1f} s, files {p['tensor_files_seconds']:.1f} s) for {p['structures']} structures; "
          f"load {result['load_seconds']:.1f} s, cat_data {result['cat_data_seconds']:.1f} s", file=sys.stderr)
    print("train epochs: " + ", ".join(f"{s:.1f} s ({r:.1f} struct/s, other processes {o:.1f} CPU s)" for s, r, o in
                                        zip(tr["epoch_seconds"], tr["structures_per_second"],
                                            tr["epoch_other_cpu_seconds"]))
          + f"; steady {tr['steady_structures_per_second']:.1f} struct/s", file=sys.stderr)
    print(f"final train RMSE E {tr['final_kcal_per_mol'].get('RMSE')} kcal/mol, F {tr['final_kcal_per_mol'].get('FRMSE')} "
          f"kcal/mol/A; valid RMSE E {vl['final_kcal_per_mol'].get('RMSE')}, F {vl['final_kcal_per_mol'].get('FRMSE')}",
          file=sys.stderr)
    print(f"total {total:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB, load average before/after "
          f"{loadavg_before[0]:.2f}/{result['loadavg_after'][0]:.2f} -> {out_path}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
