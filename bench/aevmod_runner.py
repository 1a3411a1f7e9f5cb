"""Time aevmod 1.1.0 the way PyKinML 1.1.2 calls it in its data preparation (AEVs and their Jacobians).

Standalone: imports only numpy, aevmod and the standard library (never pykinml), and is meant to be run
with the python of a separate virtualenv that holds ``aevmod==1.1.0`` and numpy (``bench/aevmod_env.py``
makes one). ::

    python bench/aevmod_runner.py INPUT.npz OUTPUT.npz [--jacobian] [--save-values N] [--repeat R] [--no-memory]

INPUT.npz
    ``numbers`` (uint8, all atoms concatenated), ``positions`` (float64 (N_total, 3), Å), ``offsets``
    (int64, n_structures + 1), ``elements`` (element symbols in model order, e.g. ['C', 'H']), ``n_rad``,
    ``n_rho_ang``, ``n_ang``, ``rc_rad``, ``rc_ang``, ``beta``.

How PyKinML 1.1.2 calls aevmod (``pykinml/data.py``, class ``Data_pes``)
    * ``get_data`` (also ``aev_from_xyz``, ``prep_aev``) builds one object
      ``aevmod.aev(atom_types, nrho_rad, nrho_ang, nalpha, R_c, beta=args.beta)`` with
      ``atom_types = args.present_elements``, ``(nrho_rad, nrho_ang, nalpha) = args.aev_params``,
      ``R_c = args.cuttoff_radius`` ([rad, ang]); the defaults in ``prepper.py:parse_arguments_list`` are
      ['C', 'H'], [16, 8, 8], [5.2, 3.8] and ``--beta 0.95``. ``zeta`` is not a parameter: aevmod fixes
      it at 8 (``aev::aev`` in ``src/aev.cpp``).
    * AEVs: ``xyz_to_aev_db`` makes a new ``aevmod.config(symb)`` for EVERY structure, then
      ``conf.add_structures(np.array([xyz.flatten()]))``, ``myaev.build_index_sets(conf)`` and
      ``y = np.array(myaev.eval(conf)[0])`` (pybind11 returns nested Python lists; PyKinML turns them into
      an array). Afterwards it regroups every atom's row with ``.tolist()`` into per-element lists
      (``self.xdat``): timed here separately as ``aev_pack_seconds``.
    * Jacobians: ``xyz_to_daev_db`` (only with forces, ``args.wrf``) splits the structure list into
      runs of consecutive structures with the same symbol list (one ``config`` per run, i.e. per formula,
      because PyKinML reads one ``<formula>.db`` file after another), stacks their coordinates with
      repeated ``np.concatenate``, calls ``conf.add_structures(x)``, ``myaev.build_index_sets(conf)`` and
      ``J = np.array(myaev.eval_Jac(conf))`` ONCE for the whole run, and keeps ``J[k]``. Afterwards it
      regroups each atom's Jacobian with ``.tolist()`` into per-element lists (``self.dxdat``) and pads
      them into ``self.padded_dxdat`` with Python loops: timed here separately as ``jac_pack_seconds``.
    * Atom order: PyKinML's ``symb`` is the formula of the database file name expanded by ASE
      (``Atoms('C5H5').get_chemical_symbols()`` -> C C C C C H H H H H) and its databases store atoms in
      that order. aevmod itself never reorders atoms. This runner puts each structure's atoms in that
      order (stable sort by the element's index in ``elements``), groups structures by composition in
      order of first appearance (input order within a group), and undoes the permutation in the values
      it saves.

Timing: ``time.perf_counter`` around exactly the calls listed above (config creation, coordinate
conversion, index sets, evaluation, conversion of the returned lists to numpy). One untimed warm-up
evaluation of the first structure comes first. With ``--repeat R`` the passes run R times and the
fastest total is reported (all totals are saved too).

Peak memory (unless ``--no-memory``): measured in fresh child processes (this script with a hidden
``--probe`` argument), so that one measurement is not hidden by memory an earlier one left to the
allocator. Two methods, both saved:
    * ``rss``: peak resident set size above the baseline. The kernel's high-water mark ``VmHWM`` is reset
      to the current RSS by writing ``5`` to ``/proc/self/clear_refs``; peak = VmHWM after the step minus
      VmRSS before it. Where that reset is not possible, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
      after minus before (a lower bound). Sees everything, including aevmod's C++ ``std::vector`` buffers.
      ``mem_method`` says which one was used.
    * ``tracemalloc``: peak of Python-heap allocations (lists, floats, numpy buffers) above the start;
      does NOT see C++ allocations, so it is a lower bound of the RSS figure.
    Probes: ``aev``: one structure's AEV step (max over the first 10 structures); ``jac``: the whole
    grouped Jacobian pass as PyKinML runs it (also divided by the number of structures); ``jac1``: one
    structure's Jacobian step on its own config (max over the first 10 structures).

aevmod's native layout (read from aevmod 1.1.0 ``src/aev.cpp``, ``src/eval.cpp``,
``src/bld_index_sets.cpp``, ``src/util.cpp`` and checked numerically against a direct numpy evaluation)
    * ``eval(conf)`` -> list [structure p][atom i][q], q in 0..dout-1 with
      dout = len(types)*n_rad + len(types)*(len(types)+1)/2 * n_rho_ang*n_ang.
      q < len(types)*n_rad: radial, q = kk*n_rad + l for element ``types[kk]`` (the constructor's list
      order) and shift rho_l = linspace(Δ/2, R_c - Δ/2, n_rad) (``two_d_2col_pack(eta, rho)``).
      Then angular, q = offset + kk*(n_rho_ang*n_ang) + m*n_ang + a, kk over unordered type pairs
      (t1, t2) with t1 <= t2 in upper-triangular order ((0,0),(0,1),...,(1,1),...), shift rho_m outer,
      angle alpha_a = linspace(0, pi, n_ang) inner (``two_d_4col_pack(eta, rho, zeta, alpha)`` with one
      eta and one zeta). This IS our column layout when ``types`` = our ``elements``: no column permutation.
    * ``eval_Jac(conf)`` -> list [p][i][q][s], s = 3*t + c: d G_{i,q} / d x_{t,c} (t the atom, c = x, y, z),
      i.e. per structure an (N, dout, 3N) array; ``reshape(N, dout, N, 3)`` is our (n_atoms, D, n_atoms, 3)
      layout, d G_i / d x_j, in aevmod's (= PyKinML's) atom order.
    * Only the atom order differs from ours (see above); the saved values are permuted back to the input
      order: ``aev_in = aev_pk[inv]`` and ``jac_in = jac_pk[inv][:, :, inv]`` with ``inv = argsort(perm)``.

aevmod's values against the AEV definition (f_c, radial and angular terms, theta = arccos(clip(beta cos, -1, 1)),
zeta = 8, shifts and widths as in our design)
    * ``eval``: the same to rounding (max |difference| <= 1e-15 on C5H5.db structures, any atom order).
    * ``eval_Jac``: radial block correct (agrees with central differences to 5e-9); angular block correct
      only for beta = 1. In ``aev::eval_Jac`` (src/eval.cpp) ``costh = cos(theta)`` is beta*cos(angle),
      and it is used where d theta / dx needs the unscaled cos(angle):
      ``dthetadi = beta*(-dxxdi + costh*dRRdi)/(Rij*Rik*sin(theta))`` (likewise for j, k); the correct
      expression has cos(angle) = costh/beta there. With beta = 0.95 the angular Jacobian is off by
      about 2.6 % (relative Frobenius norm; max abs 0.06 against entries up to 2) on C5H5 structures;
      an analytic Jacobian with that substitution reproduces aevmod's to 1e-15.

Saved values (``--save-values N``, the first N structures in INPUT order): ``saved_aev`` is the row
concatenation of the (n_atoms, D) AEVs (rows ``saved_atom_offsets[s]:saved_atom_offsets[s+1]``);
``saved_jac`` is the concatenation of the flattened (n_atoms, D, n_atoms, 3) Jacobians (elements
``saved_jac_offsets[s]:saved_jac_offsets[s+1]``), both float64 in the input's atom order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from importlib import metadata

import aevmod
import numpy as np

SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf "
    "Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()

PROBE_STRUCTURES = 10


# ----------------------------------------------------------------------------------------------------
# input


def load_input(path: str) -> dict:
    with np.load(path, allow_pickle=False) as data:
        numbers = np.asarray(data["numbers"], dtype=np.int64)
        positions = np.asarray(data["positions"], dtype=np.float64)
        offsets = np.asarray(data["offsets"], dtype=np.int64)
        elements = [str(e) for e in np.atleast_1d(data["elements"])]
        params = {
            "n_rad": int(data["n_rad"]),
            "n_rho_ang": int(data["n_rho_ang"]),
            "n_ang": int(data["n_ang"]),
            "rc_rad": float(data["rc_rad"]),
            "rc_ang": float(data["rc_ang"]),
            "beta": float(data["beta"]),
        }
    if positions.shape != (len(numbers), 3) or offsets[0] != 0 or offsets[-1] != len(numbers):
        raise SystemExit("INPUT.npz: positions must be (len(numbers), 3) and offsets run from 0 to len(numbers)")
    if np.any(np.diff(offsets) <= 0):
        raise SystemExit("INPUT.npz: every structure needs at least one atom")
    element_index = {symbol: k for k, symbol in enumerate(elements)}
    unknown = sorted({SYMBOLS[z] if 0 < z < len(SYMBOLS) else str(z) for z in np.unique(numbers)}
                     - set(elements))
    if unknown:
        # aevmod's build_index_sets would call exit() on such an atom and take the process with it.
        raise SystemExit(f"INPUT.npz: atoms of {unknown} are not in elements {elements}")

    structures = []  # in input order: (symb in PyKinML order, xyz in PyKinML order, perm)
    for s in range(len(offsets) - 1):
        z = numbers[offsets[s]:offsets[s + 1]]
        symbols = [SYMBOLS[v] for v in z]
        perm = np.argsort([element_index[v] for v in symbols], kind="stable")
        structures.append(([symbols[a] for a in perm], positions[offsets[s]:offsets[s + 1]][perm], perm))
    return {"elements": elements, "params": params, "structures": structures}


def processing_order(structures: list) -> tuple[list[int], list[list[int]], list[str]]:
    """Structures grouped by composition (first appearance first, input order inside), as PyKinML
    sees them when it reads one database file per formula. Returns the order, the groups (positions in
    that order) and each group's formula."""
    groups: dict[tuple, list[int]] = {}
    for s, (symb, _, _) in enumerate(structures):
        groups.setdefault(tuple(symb), []).append(s)
    order, runs, formulas = [], [], []
    for symb, members in groups.items():
        runs.append(list(range(len(order), len(order) + len(members))))
        order.extend(members)
        formulas.append("".join(f"{e}{symb.count(e) if symb.count(e) > 1 else ''}" for e in dict.fromkeys(symb)))
    return order, runs, formulas


def make_aev(elements: list[str], params: dict):
    """As PyKinML's Data_pes.get_data: aevmod.aev(atom_types, nrho_rad, nrho_ang, nalpha, R_c, beta=beta)."""
    return aevmod.aev(elements, params["n_rad"], params["n_rho_ang"], params["n_ang"],
                      [params["rc_rad"], params["rc_ang"]], beta=params["beta"])


# ----------------------------------------------------------------------------------------------------
# the steps PyKinML runs (pykinml 1.1.2, pykinml/data.py)


def aev_step(myaev, symb: list[str], xyz: np.ndarray) -> np.ndarray:
    """One structure, as Data_pes.xyz_to_aev_db (aevmod branch)."""
    conf = aevmod.config(symb)
    x = np.array([xyz.flatten()])
    conf.add_structures(x)
    myaev.build_index_sets(conf)
    return np.array(myaev.eval(conf)[0])


def jac_step(myaev, symb: list[str], xyzs: list[np.ndarray]) -> list[np.ndarray]:
    """One run of structures with the same symbols, as Data_pes.xyz_to_daev_db."""
    conf = aevmod.config(symb)
    for j, xyz in enumerate(xyzs):
        if j == 0:
            x = np.array([xyz.flatten()])
        else:
            x_new = np.array([xyz.flatten()])
            x = np.concatenate((x, x_new))
    npt = conf.add_structures(x)
    myaev.build_index_sets(conf)
    J = np.array(myaev.eval_Jac(conf))
    return [J[k] for k in range(npt)]


def aev_pack(atom_types: list[str], symbs: list[list[str]], full_aev_data: list[np.ndarray]):
    """The regrouping that follows in Data_pes.xyz_to_aev_db (self.xdat; energy left at 0)."""
    num_nn = len(atom_types)
    xdat = np.empty([len(symbs), num_nn + 1], dtype=object)
    for i in range(len(symbs)):
        xdatnn = [[]] * num_nn
        for j, s in enumerate(symbs[i]):
            k = atom_types.index(s)
            d = full_aev_data[i][j].tolist()
            xdatnn[k] = xdatnn[k] + [d]
        for k in range(num_nn):
            xdat[i][k] = xdatnn[k]
        xdat[i][num_nn] = [0.0]
    return xdat


def jac_pack(atom_types: list[str], symbs: list[list[str]], J_tot: list[np.ndarray]):
    """The regrouping and padding that follow in Data_pes.xyz_to_daev_db (self.dxdat -> self.padded_dxdat)."""
    num_nn = len(atom_types)
    ndat = len(symbs)
    dxdat = np.empty([ndat, num_nn], dtype=object)
    for i in range(ndat):
        dxdatnn = [[]] * num_nn
        for j, s in enumerate(symbs[i]):
            k = atom_types.index(s)
            d = J_tot[i][j].tolist()
            dxdatnn[k] = dxdatnn[k] + [d]
        for k in range(num_nn):
            dxdat[i][k] = dxdatnn[k]
    d0 = len(dxdat)
    d1, d2, d3, d4 = [], [], [], []
    for i in range(len(dxdat)):
        d1.append(len(dxdat[i]))
        for j in range(len(dxdat[i])):
            d2.append(len(dxdat[i][j]))
            for k in range(len(dxdat[i][j])):
                d3.append(len(dxdat[i][j][k]))
                for v in range(len(dxdat[i][j][k])):
                    d4.append(len(dxdat[i][j][k][v]))
    padded = np.zeros((d0, max(d1), max(d2), max(d3), max(d4)))
    for i in range(len(dxdat)):
        for j in range(len(dxdat[i])):
            for k in range(len(dxdat[i][j])):
                for v in range(len(dxdat[i][j][k])):
                    padded[i][j][k][v][:len(dxdat[i][j][k][v])] = dxdat[i][j][k][v]
    return padded


# ----------------------------------------------------------------------------------------------------
# timing


def aev_pass(myaev, ordered: list) -> tuple[float, np.ndarray, list[np.ndarray]]:
    times = np.empty(len(ordered))
    values = []
    for n, (symb, xyz, _) in enumerate(ordered):
        start = time.perf_counter()
        y = aev_step(myaev, symb, xyz)
        times[n] = time.perf_counter() - start
        values.append(y)
    return float(times.sum()), times, values


def jac_pass(myaev, ordered: list, runs: list[list[int]]) -> tuple[float, np.ndarray, list[np.ndarray]]:
    times = np.empty(len(runs))
    J_tot: list[np.ndarray] = []
    for g, run in enumerate(runs):
        start = time.perf_counter()
        J_tot.extend(jac_step(myaev, ordered[run[0]][0], [ordered[n][1] for n in run]))
        times[g] = time.perf_counter() - start
    return float(times.sum()), times, J_tot


# ----------------------------------------------------------------------------------------------------
# memory probes (each in a fresh process)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None and _status_kib("VmRSS") is not None


class RssPeak:
    """Peak resident memory of a block above its start: VmHWM reset via clear_refs, else ru_maxrss."""

    method = "rss"

    def __enter__(self):
        self.hwm = _reset_hwm()
        if self.hwm:
            self.kind = "VmHWM (reset via /proc/self/clear_refs) - VmRSS before"
            self.base = _status_kib("VmRSS")
        else:
            self.kind = "getrusage ru_maxrss after - before (lower bound)"
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        top = _status_kib("VmHWM") if self.hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.bytes = max(0, top - self.base) * 1024


class TracemallocPeak:
    method = "tracemalloc"
    kind = "tracemalloc peak (Python heap only, not C++ allocations)"

    def __enter__(self):
        tracemalloc.start()
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc):
        self.bytes = max(0, tracemalloc.get_traced_memory()[1] - self.base)
        tracemalloc.stop()


def probe(input_path: str, what: str, meter_name: str) -> dict:
    data = load_input(input_path)
    order, runs, _ = processing_order(data["structures"])
    ordered = [data["structures"][s] for s in order]
    myaev = make_aev(data["elements"], data["params"])
    meter_cls = RssPeak if meter_name == "rss" else TracemallocPeak
    kept = []  # results stay alive, as in PyKinML
    if what == "aev":
        peaks = []
        for symb, xyz, _ in ordered[:PROBE_STRUCTURES]:
            with meter_cls() as meter:
                kept.append(aev_step(myaev, symb, xyz))
            peaks.append(meter.bytes)
        return {"bytes": max(peaks), "structures": len(peaks), "method": meter.kind}
    if what == "jac1":
        peaks = []
        for symb, xyz, _ in ordered[:PROBE_STRUCTURES]:
            with meter_cls() as meter:
                kept.append(jac_step(myaev, symb, [xyz]))
            peaks.append(meter.bytes)
        return {"bytes": max(peaks), "structures": len(peaks), "method": meter.kind}
    if what == "jac":
        with meter_cls() as meter:
            kept.append(jac_pass(myaev, ordered, runs))
        return {"bytes": meter.bytes, "structures": len(ordered), "method": meter.kind}
    raise SystemExit(f"unknown probe {what}")


def run_probe(input_path: str, what: str, meter_name: str) -> dict:
    run = subprocess.run([sys.executable, os.path.abspath(__file__), input_path, os.devnull,
                          "--probe", f"{what}:{meter_name}"], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"memory probe {what}:{meter_name} failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--jacobian", action="store_true", help="also time eval_Jac (grouped as PyKinML does)")
    parser.add_argument("--save-values", type=int, default=0, metavar="N",
                        help="save AEVs (and Jacobians) of the first N input structures in our layout")
    parser.add_argument("--repeat", type=int, default=1, help="run the timed passes R times, report the fastest")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.probe:
        what, meter_name = args.probe.split(":")
        print(json.dumps(probe(args.input, what, meter_name)))
        return

    data = load_input(args.input)
    elements, params, structures = data["elements"], data["params"], data["structures"]
    order, runs, formulas = processing_order(structures)
    ordered = [structures[s] for s in order]
    n = len(structures)
    myaev = make_aev(elements, params)

    # untimed warm-up (loads the extension's pages, fills caches)
    aev_step(myaev, ordered[0][0], ordered[0][1])
    if args.jacobian:
        jac_step(myaev, ordered[0][0], [ordered[0][1]])

    out: dict = {}
    aev_totals, jac_totals = [], []
    best_aev = best_jac = None
    for _ in range(max(1, args.repeat)):
        total, times, aev_values = aev_pass(myaev, ordered)
        aev_totals.append(total)
        if best_aev is None or total < best_aev[0]:
            best_aev = (total, times)
        if args.jacobian:
            total, gtimes, J_tot = jac_pass(myaev, ordered, runs)
            jac_totals.append(total)
            if best_jac is None or total < best_jac[0]:
                best_jac = (total, gtimes)

    symbs = [s[0] for s in ordered]
    start = time.perf_counter()
    aev_pack(elements, symbs, aev_values)
    out["aev_pack_seconds"] = time.perf_counter() - start

    per_structure = np.empty(n)
    per_structure[np.asarray(order)] = best_aev[1]
    out.update(aev_seconds=best_aev[0], aev_seconds_all=np.array(aev_totals),
               aev_mean_seconds=best_aev[0] / n, aev_seconds_per_structure=per_structure)
    if args.jacobian:
        start = time.perf_counter()
        jac_pack(elements, symbs, J_tot)
        out["jac_pack_seconds"] = time.perf_counter() - start
        out.update(jac_seconds=best_jac[0], jac_seconds_all=np.array(jac_totals),
                   jac_mean_seconds=best_jac[0] / n, jac_group_seconds=best_jac[1])

    summary = {
        "n_structures": n, "n_groups": len(runs), "formulas": formulas,
        "group_sizes": [len(r) for r in runs], "dout": int(myaev.dout), "elements": elements, **params,
        "aev_seconds": out["aev_seconds"], "aev_mean_ms": 1e3 * out["aev_mean_seconds"],
        "aev_pack_seconds": out["aev_pack_seconds"],
    }
    if args.jacobian:
        summary.update(jac_seconds=out["jac_seconds"], jac_mean_ms=1e3 * out["jac_mean_seconds"],
                       jac_pack_seconds=out["jac_pack_seconds"])

    if not args.no_memory:
        probes = ["aev"] + (["jac1", "jac"] if args.jacobian else [])
        for what in probes:
            for meter_name in ("rss", "tracemalloc"):
                result = run_probe(args.input, what, meter_name)
                key = f"{what}_peak_bytes" if meter_name == "rss" else f"{what}_peak_tracemalloc_bytes"
                out[key] = result["bytes"]
                if meter_name == "rss":
                    out["mem_method"] = result["method"]
                summary[key] = result["bytes"]
        if args.jacobian:
            out["jac_peak_bytes_per_structure"] = out["jac_peak_bytes"] / n
            out["jac_peak_tracemalloc_bytes_per_structure"] = out["jac_peak_tracemalloc_bytes"] / n
            summary["jac_peak_bytes_per_structure"] = out["jac_peak_bytes_per_structure"]
            summary["jac_peak_tracemalloc_bytes_per_structure"] = out["jac_peak_tracemalloc_bytes_per_structure"]
        summary["mem_method"] = out["mem_method"]

    if args.save_values > 0:
        position = {s: k for k, s in enumerate(order)}
        count = min(args.save_values, n)
        aevs, jacs, atom_offsets, jac_offsets = [], [], [0], [0]
        for s in range(count):
            perm = structures[s][2]
            inv = np.argsort(perm)
            k = position[s]
            aevs.append(aev_values[k][inv])
            atom_offsets.append(atom_offsets[-1] + len(perm))
            if args.jacobian:
                natoms = len(perm)
                jac = J_tot[k].reshape(natoms, -1, natoms, 3)[inv][:, :, inv]
                jacs.append(jac.ravel())
                jac_offsets.append(jac_offsets[-1] + jac.size)
        out.update(saved_count=count, saved_aev=np.concatenate(aevs), saved_atom_offsets=np.array(atom_offsets))
        if args.jacobian:
            out.update(saved_jac=np.concatenate(jacs), saved_jac_offsets=np.array(jac_offsets))

    summary.update(aevmod_version=metadata.version("aevmod"), numpy_version=np.__version__,
                   python_version=platform.python_version(), machine=platform.machine(),
                   processor=platform.processor())
    out.update(
        n_structures=n, dout=int(myaev.dout), formulas=np.array(formulas), group_sizes=np.array([len(r) for r in runs]),
        structure_order=np.array(order), elements=np.array(elements), **{k: v for k, v in params.items()},
        aevmod_version=summary["aevmod_version"], numpy_version=np.__version__,
        python_version=platform.python_version(), summary_json=json.dumps(summary),
    )
    if args.output != os.devnull:
        with open(args.output, "wb") as handle:
            np.savez(handle, **out)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
