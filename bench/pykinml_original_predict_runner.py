"""Time the ORIGINAL PyKinML 1.1.2's ASE calculator (``pykinml.model_calculator.Nn_surr``) on frames of an extxyz file.

Standalone like ``bench/pykinml_original_runner.py`` (whose shims and ``sys.path`` clean-up it reuses): it
imports only the original ``pykinml`` (1.1.2), aevmod, torch, ase and the standard library, never this
project's package, and must run with the python of ``bench/.venv-pykinml112``
(``bench/pykinml_original_env.py``), from a scratch directory. ::

    bench/.venv-pykinml112/bin/python bench/pykinml_original_predict_runner.py FRAMES.extxyz --out OUT.json \
        [--max-frames 100] [--warmup 5] [--latency-calls 50] [--rounds 3] [--threads 2] [--seed 0]

The model: elements C and H, AEV (n_rad, n_rho_ang, n_ang) = (16, 8, 8), cutoffs [5.2, 3.8] Å, networks
224-48-24-12-1 per element with gaussian/gaussian/gaussian/identity activations (``nnpes.CompositeNetworks``
with the ``netparams`` that ``prepper.prep_model`` builds; biases on, as in this project's ``model=small``),
random weights from ``torch.manual_seed(seed)`` (throughput does not depend on them), built in float64 and
saved with the keys of ``Trainer.save_cpu`` (``model_state_dict``, ``params``, ``sae_energies``): the file
the original's training writes and its calculator loads. The calculator is made exactly as the original's
``examples/run_model.py`` makes it::

    Nn_surr(model_file, tnsr=True, nrho_rad=16, nrho_ang=8, nalpha=8, R_c=[5.2, 3.8], mf=False, device='cpu')

and every frame is timed as ``atoms.calc = calc; atoms.get_potential_energy(); atoms.get_forces()``.

Configurations (each its own calculator, timed on the same frames):
    ``shipped``      ``examples/run_model.py``: no default dtype is set, so ``Runner`` rebuilds the network
                     in torch's default float32 (the float64 weights are cast on loading); energy, then forces.
    ``float64``      ``examples/freq_calc.py``: ``torch.set_default_dtype(torch.float64)`` first and
                     ``tnsr=False`` (numpy results); energy, then forces.
    ``*_forces_first``  the same calculator, but ``atoms.get_forces()`` before ``atoms.get_potential_energy()``:
                     ``Nn_surr.calculate`` only computes forces when they are asked for, so energy-then-forces
                     runs the whole AEV + network + Jacobian twice per frame (ASE asks for ``['energy']``,
                     then ``['forces']``), while forces-first computes both in one call and the energy comes
                     from ASE's results cache. Same numbers, plain ASE use.
``best`` names the fastest. Autograd anomaly detection plays no part (only the original's trainer turns it
on; the calculator never does). Every call also rebuilds an ``aevmod.aev`` object, the AEV Jacobian and
Python lists of it: that is the original's calculator as it is, nothing is patched.

Timing: after ``--warmup`` untimed frames, every configuration runs over all frames, then the latency
calls (one Atoms object, the first frame, moved by 0.001 Å random displacements before each call so that
nothing is cached: ``get_potential_energy()`` + ``get_forces()`` per call); configurations are interleaved
and the whole is repeated ``--rounds`` times, and the fastest round counts (other processes on a shared
2-core machine only ever slow a round down; all rounds are in the JSON).

JSON: ``configs`` maps each configuration to {frames, seconds, frames_per_second, ms_per_call_energy_forces,
dtype, latency_ms_median, round_seconds, ...}; ``shipped`` and ``best`` name configurations; settings,
threads and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Importing the training runner drops this folder and the repository from sys.path (never import /work/main).
import pykinml_original_runner as original_runner  # noqa: E402

ELEMENTS = ["C", "H"]
AEV = dict(nrho_rad=16, nrho_ang=8, nalpha=8, R_c=[5.2, 3.8])
NEURONS = [48, 24, 12, 1]
ACTIVATIONS = ["gaussian", "gaussian", "gaussian", "identity"]
SAE = [-1035.30436565, -16.8356588]  # the original's own sae_guess (prepper.sae_calculator)
CONFIGS = {  # name: (float64 default dtype, tnsr, forces first)
    "shipped": (False, True, False),
    "float64": (True, False, False),
    "shipped_forces_first": (False, True, True),
    "float64_forces_first": (True, False, True),
}


def save_model(path: Path, seed: int) -> dict:
    """A random 224-48-24-12-1 (C, H) network saved as the original's trainer saves one (float64)."""
    import numpy as np
    import torch

    from pykinml import nnpes, prepper

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as the original's training scripts do
    try:
        torch.manual_seed(seed)
        functions = prepper.args_to_actfn(list(ACTIVATIONS))
        sae = np.array(SAE)
        n_input = 2 * AEV["nrho_rad"] + 3 * AEV["nrho_ang"] * AEV["nalpha"]  # 2 elements: 2·16 + 3·8·8 = 224
        netparams = {"n_input": [n_input] * len(ELEMENTS), "neurons": [list(NEURONS)] * len(ELEMENTS),
                     "activations": [functions] * len(ELEMENTS), "sae_energies": sae, "add_sae": True, "biases": True}
        net = nnpes.CompositeNetworks(**netparams)
        netparams["activations"] = [list(ACTIVATIONS)] * len(ELEMENTS)  # prep_model stores the names
        torch.save({"epoch": 0, "model_state_dict": net.state_dict(), "sae_energies": sae, "params": netparams}, path)
    finally:
        torch.set_default_dtype(previous)
    return {"n_input": n_input, "neurons": NEURONS, "activations": ACTIVATIONS, "biases": True,
            "parameters": sum(p.numel() for p in net.parameters())}


def make_calculator(model: Path, float64: bool, tnsr: bool):
    import torch

    from pykinml import model_calculator as mod

    torch.set_default_dtype(torch.float64 if float64 else torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ASE's note on Calculator's positional arguments
        calc = mod.Nn_surr(str(model), tnsr=tnsr, mf=False, device="cpu", **AEV)
    return calc


def energy_and_forces(atoms, forces_first: bool):
    if forces_first:
        forces = atoms.get_forces()
        return atoms.get_potential_energy(), forces
    energy = atoms.get_potential_energy()
    return energy, atoms.get_forces()


def time_frames(calc, frames: list, forces_first: bool) -> tuple[float, list[float], object]:
    """Seconds for energy + forces of every frame (``atoms.calc = calc`` each), the energies and the last one."""
    import torch

    energies = []
    start = time.perf_counter()
    for atoms in frames:
        atoms.calc = calc
        energy, forces = energy_and_forces(atoms, forces_first)
        energies.append(float(energy.detach() if isinstance(energy, torch.Tensor) else energy))
    seconds = time.perf_counter() - start
    for atoms in frames:
        atoms.calc = None
    return seconds, energies, energy


def time_latency(calc, atoms, forces_first: bool, calls: int, rng) -> list[float]:
    """Seconds per energy + forces call on one Atoms object moved slightly before each call (nothing cached)."""
    atoms = atoms.copy()
    atoms.calc = calc
    reference = atoms.positions.copy()
    seconds = []
    for _ in range(calls):
        atoms.positions = reference + rng.normal(0.0, 0.001, reference.shape)
        start = time.perf_counter()
        energy_and_forces(atoms, forces_first)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_configs(model: Path, frames: list, names: list[str], warmup: int, latency_calls: int, rounds: int,
                 seed: int) -> dict:
    """Every configuration timed ``rounds`` times, interleaved (config A, B, ..., then again), so that load from
    other processes on a shared machine hits them alike; the fastest round counts, all are kept."""
    import numpy as np
    import torch

    calcs, rows = {}, {}
    for name in names:
        float64, tnsr, forces_first = CONFIGS[name]
        calcs[name] = make_calculator(model, float64, tnsr)
        rows[name] = {"round_seconds": [], "round_other_cores": [], "round_latency_ms_median": [], "latency_ms": []}
    rng = np.random.default_rng(seed)
    for round_ in range(rounds):
        for name in names:
            float64, tnsr, forces_first = CONFIGS[name]
            torch.set_default_dtype(torch.float64 if float64 else torch.float32)  # as the example's script left it
            calc, row = calcs[name], rows[name]
            if round_ == 0:
                time_frames(calc, [a.copy() for a in frames[:warmup]], forces_first)
            busy, own = original_runner._machine_busy_seconds(), time.process_time()
            seconds, energies, energy = time_frames(calc, frames, forces_first)
            other = original_runner._machine_busy_seconds() - busy - (time.process_time() - own)
            row["round_other_cores"].append(max(0.0, other) / seconds)
            latency = time_latency(calc, frames[0], forces_first, latency_calls, rng)
            row["round_seconds"].append(seconds)
            row["latency_ms"].append([1e3 * s for s in latency])
            row["round_latency_ms_median"].append(1e3 * statistics.median(latency) if latency else float("nan"))
            row["energy_mean"] = float(np.mean(energies))  # the configurations agree (same weights)
            row["energy_type"] = (str(energy.dtype).replace("torch.", "") if isinstance(energy, torch.Tensor)
                                  else type(energy).__name__)
    torch.set_default_dtype(torch.float32)
    results = {}
    for name in names:
        float64, tnsr, forces_first = CONFIGS[name]
        row, calc = rows[name], calcs[name]
        seconds = min(row["round_seconds"])
        latencies = [ms for one in row["latency_ms"] for ms in one]
        results[name] = {
            "frames": len(frames), "seconds": seconds, "frames_per_second": len(frames) / seconds,
            "ms_per_call_energy_forces": 1e3 * seconds / len(frames),
            "dtype": str(next(calc.surrogate.nn_pes.model.parameters()).dtype).replace("torch.", ""),
            "energy_type": row["energy_type"], "tnsr": tnsr, "forces_first": forces_first,
            "evaluations_per_frame": 1 if forces_first else 2,
            "round_seconds": row["round_seconds"],
            "round_other_cores": row["round_other_cores"],  # cores other processes used meanwhile
            "latency_calls": latency_calls,
            "latency_ms_median": min(row["round_latency_ms_median"]) if latencies else None,
            "latency_ms_min": min(latencies) if latencies else None,
            "round_latency_ms_median": row["round_latency_ms_median"],
            "energy_mean": row["energy_mean"],
        }
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("frames", type=Path, help="extxyz file of C/H frames")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--max-frames", type=int, default=100, help="frames timed per configuration (0: all)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--latency-calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per configuration (the fastest counts)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    options = parser.parse_args(argv)
    out_path = options.out.resolve()
    frames_path = options.frames.resolve()

    shims = original_runner.install_shims()
    import ase.io
    import numpy as np
    import torch

    import pykinml

    pkfile = Path(pykinml.__path__[0]).resolve()
    if Path(sys.prefix).resolve() not in pkfile.parents or version("pykinml") != "1.1.2":
        raise SystemExit(f"imported the wrong pykinml ({pkfile}, {version('pykinml')}): run with the "
                         f"python of bench/.venv-pykinml112 (bench/pykinml_original_env.py)")
    torch.set_num_threads(options.threads)

    frames = ase.io.read(frames_path, ":")
    if options.max_frames > 0:
        frames = frames[:options.max_frames]
    for atoms in frames:
        atoms.calc = None
        if set(atoms.get_chemical_symbols()) - set(ELEMENTS):
            raise SystemExit(f"{frames_path}: the model knows only {ELEMENTS}")

    with tempfile.TemporaryDirectory(prefix="pykinml112-predict-") as workdir:
        os.chdir(workdir)
        model = Path(workdir) / "model-0000.pt"
        network = save_model(model, options.seed)
        results = time_configs(model, frames, options.configs, options.warmup, options.latency_calls,
                               options.rounds, options.seed)
        for name, r in results.items():
            print(f"original Nn_surr {name:>22}: {r['frames_per_second']:7.2f} frames/s, "
                  f"{r['ms_per_call_energy_forces']:7.1f} ms/frame, latency median {r['latency_ms_median'] or float('nan'):.1f} ms "
                  f"({r['dtype']})", file=sys.stderr)
        os.chdir(tempfile.gettempdir())

    best = max(results, key=lambda k: results[k]["frames_per_second"])
    result = {
        "what": "original PyKinML 1.1.2 ASE calculator (model_calculator.Nn_surr), energies and forces per frame",
        "configs": results,
        "shipped": "shipped" if "shipped" in results else None,
        "best": best,
        "settings": {"elements": ELEMENTS, **AEV, "network": network, "seed": options.seed,
                     "frames_file": str(frames_path), "warmup": options.warmup, "device": "cpu",
                     "anomaly_detection": torch.is_anomaly_enabled()},
        "threads": {"torch_num_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
        "shims": shims,
        "loadavg": os.getloadavg(),
        "versions": {"pykinml": version("pykinml"), "aevmod": version("aevmod"), "torch": torch.__version__,
                     "numpy": np.__version__, "ase": version("ase"), "python": platform.python_version()},
        "pykinml_path": str(pkfile),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


if __name__ == "__main__":
    main()
