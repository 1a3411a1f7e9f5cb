"""A trained model and its predictions on ``ase.Atoms``: what ``pykinml-predict``, the ASE calculator and scripts use.

:func:`load_model` reads a checkpoint (``weights_only=True``), a run directory (its best checkpoint) or a
model written by ``pykinml-export``; everything it needs (AEV constants, elements, levels, SAEs,
architecture) is stored in the file. :meth:`Model.predict` packs frames into batches and returns energies
and forces (and stress for periodic cells) per target, computed by autograd through the AEV.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from pykinml.aev.computer import torch_dtype
from pykinml.aev.params import AEVParams
from pykinml.checkpoints import load_checkpoint
from pykinml.errors import PykinmlError
from pykinml.nn.potential import ChainedPotential
from pykinml.nn.standalone import StandalonePotential

#: the name of the metadata file inside an exported (TorchScript) model
EXPORT_METADATA = "pykinml.json"
#: frames of one molecule in a :meth:`Model.predict` call from which they take the per-molecule path: below
#: it, building that path (and its fixed cost per call, ≈ 1 ms) costs more than the batched kernels
MOLECULE_GROUP = 8
#: per-molecule paths a :class:`Model` keeps, for the sets of atoms seen last
MOLECULES_KEPT = 8


@dataclass
class Predictions:
    """Predictions for B frames and the model's T targets (``names``, low → high level), in eV, Å."""

    names: list[str]
    energies: np.ndarray  # (T, B) eV
    forces: list[np.ndarray] | None  # per frame (T, n_atoms, 3) eV/Å
    stress: np.ndarray | None  # (T, B, 3, 3) eV/Å³; NaN for frames without a periodic cell

    def __len__(self) -> int:
        return self.energies.shape[1]


class Model:
    """A trained potential ready to predict (see :func:`load_model`).

    ``fidelity`` is single, delta or multi; ``names`` the targets it predicts (the level for single
    fidelity, every level low → high for multi-fidelity, ``high-low`` for delta, whose predictions are
    corrections to add to a baseline at the low level: see :meth:`with_baseline`).
    """

    def __init__(self, module: torch.nn.Module, meta: dict, source: str):
        self.module, self.meta, self.source = module, meta, source
        self.params = AEVParams.from_dict(meta["aev"])
        self.fidelity: str = meta["fidelity"]
        self.levels: list[str] = list(meta["levels"])
        self.names: list[str] = [t["name"] for t in meta["targets"]]
        self.elements: list[str] = list(meta["elements"])
        self._lookup = np.full(119, -1, dtype=np.int64)
        self._lookup[list(self.params.atomic_numbers)] = np.arange(self.params.n_elements)
        self._molecules: dict = {}  # atomic numbers (bytes) → MoleculePotential, see _molecule

    def compiled(self) -> Model:
        """The same model with its module compiled by TorchScript (what ``pykinml-export`` saves): fewer Python
        steps per call, so a single small molecule runs faster; the first two calls are slow while it optimises."""
        module = self.module
        if isinstance(module, StandalonePotential):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
                module = torch.jit.script(module.eval())
        return Model(module, self.meta, self.source)

    @property
    def is_delta(self) -> bool:
        return self.fidelity == "delta"

    @property
    def device(self) -> torch.device:
        return next(iter(self.module.buffers())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.module.parameters())).dtype

    def _unknown(self, numbers: np.ndarray) -> np.ndarray:
        """Which of the atomic numbers the model has no network for."""
        return (np.take(self._lookup, numbers, mode="clip") < 0) | (numbers >= len(self._lookup))

    def species(self, numbers: np.ndarray) -> np.ndarray:
        """Element indices (the model's element order) of atomic numbers the model knows (:meth:`check_elements`)."""
        return self._lookup[np.asarray(numbers)]

    def check_elements(self, atoms: Atoms, where: str) -> None:
        """One-line error naming ``where`` (file and frame) when ``atoms`` has an element the model lacks."""
        numbers = np.asarray(atoms.numbers)
        unknown = self._unknown(numbers)
        if unknown.any():
            atom = int(np.argmax(unknown))
            raise PykinmlError(
                f"{where}: atom {atom} is {chemical_symbols[int(numbers[atom])]}, which this model does not know "
                f"(its elements: {', '.join(self.elements)})"
            )

    def predict(
        self, frames: Sequence[Atoms], forces: bool = True, stress: bool | None = None, where: str = "frame"
    ) -> Predictions:
        """Energies (and forces, and stress when ``stress`` or, by default, when a frame is periodic) of ``frames``.

        Open-boundary molecules of up to :data:`~pykinml.molecule.MAX_ATOMS` atoms with the same atoms in at
        least :data:`MOLECULE_GROUP` of ``frames`` (the frames of a trajectory) take the per-molecule path, all
        their conformations at once; every other frame takes the neighbour-list kernels.
        """
        frames = list(frames)
        numbers = np.concatenate([a.numbers for a in frames]).astype(np.int64) if frames else np.zeros(0, np.int64)
        if self._unknown(numbers).any():  # one vectorised check; the frame at fault is found only on failure
            for k, atoms in enumerate(frames):
                self.check_elements(atoms, f"{where} {k}")
        periodic = np.array([bool(np.any(a.pbc)) for a in frames], dtype=bool)
        if stress is None:
            stress = bool(periodic.any())
        n_targets = len(self.names)
        energies = np.zeros((n_targets, len(frames)))
        frame_forces: list = [None] * len(frames)
        stresses = np.full((n_targets, len(frames), 3, 3), np.nan) if stress else None
        grouped = np.zeros(len(frames), dtype=bool)
        for group in self._molecule_groups(frames, periodic):
            group_energies, group_forces = self._molecule(frames[group[0]].numbers)(np.stack([frames[k].positions for k in group]))
            energies[:, group] = group_energies
            for slot, k in enumerate(group):
                frame_forces[k] = group_forces[:, slot]
            grouped[group] = True
        rest = np.flatnonzero(~grouped).tolist()
        if rest:
            batch = self._predict_batch([frames[k] for k in rest], forces, stress)
            energies[:, rest] = batch.energies
            for slot, k in enumerate(rest):
                if batch.forces is not None:
                    frame_forces[k] = batch.forces[slot]
            if stresses is not None and batch.stress is not None:
                stresses[:, rest] = batch.stress  # NaN for open-boundary frames, as the groups' stay
        return Predictions(self.names, energies, frame_forces if forces else None, stresses)

    def _molecule_groups(self, frames: list[Atoms], periodic: np.ndarray) -> list[list[int]]:
        """Indices of the frames that take the per-molecule path, one list per set of atoms."""
        from pykinml.molecule import MAX_ATOMS

        groups: dict[bytes, list[int]] = {}
        for k, atoms in enumerate(frames):
            if not periodic[k] and len(atoms) <= MAX_ATOMS:
                groups.setdefault(atoms.numbers.tobytes(), []).append(k)
        return [group for group in groups.values() if len(group) >= MOLECULE_GROUP]

    def _molecule(self, numbers: np.ndarray):
        """The :class:`~pykinml.molecule.MoleculePotential` of these atoms (the last few are kept)."""
        from pykinml.molecule import MoleculePotential

        key = np.asarray(numbers).tobytes()
        potential = self._molecules.pop(key, None) or MoleculePotential(self, numbers)
        self._molecules[key] = potential  # most recent last
        while len(self._molecules) > MOLECULES_KEPT:
            self._molecules.pop(next(iter(self._molecules)))
        return potential

    def _predict_batch(self, frames: list[Atoms], forces: bool, stress: bool) -> Predictions:
        """Predictions of ``frames`` by the neighbour-list kernels of the model's module."""
        periodic = np.array([bool(np.any(a.pbc)) for a in frames], dtype=bool)
        counts = [len(a) for a in frames]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        device = self.device
        numbers = torch.as_tensor(np.concatenate([a.numbers for a in frames]).astype(np.int64), device=device)
        positions = torch.as_tensor(np.concatenate([a.positions for a in frames]), dtype=self.dtype, device=device)
        cells = torch.as_tensor(np.array([a.cell.array for a in frames]), dtype=self.dtype, device=device)
        pbc = torch.as_tensor(np.array([a.pbc for a in frames], dtype=bool), device=device)
        out = self.module.predict_batch(numbers, positions, torch.as_tensor(offsets, device=device), cells, pbc, forces, stress)
        energies = out["energy"].cpu().numpy()
        split_forces = None
        if forces:
            all_forces = out["forces"].double().cpu().numpy()
            split_forces = [all_forces[:, a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        stresses = None
        if stress:
            stresses = out["stress"].double().cpu().numpy()
            stresses[:, ~periodic] = np.nan
        return Predictions(self.names, energies, split_forces, stresses)

    def predict_stream(
        self, frames: Iterable[Atoms], batch_size: int = 256, forces: bool = True
    ) -> Iterator[tuple[list[Atoms], Predictions]]:
        """Predictions batch by batch for an iterable of frames (never holds more than one batch)."""
        batch: list[Atoms] = []
        for atoms in frames:
            batch.append(atoms)
            if len(batch) == batch_size:
                yield batch, self.predict(batch, forces)
                batch = []
        if batch:
            yield batch, self.predict(batch, forces)

    def with_baseline(self, predictions: Predictions, energies: np.ndarray, forces: list[np.ndarray] | None) -> Predictions:
        """A delta model's high-level predictions: the baseline (low-level) energies and forces plus the correction."""
        if not self.is_delta:
            raise PykinmlError(f"{self.source}: only a delta model takes a baseline (this one is {self.fidelity})")
        high = self.levels[-1]
        total_forces = None
        if predictions.forces is not None and forces is not None:
            total_forces = [f[None] + delta for f, delta in zip(forces, predictions.forces)]
        return Predictions([high], predictions.energies + np.asarray(energies)[None], total_forces, None)


def _exported(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"extra/{EXPORT_METADATA}") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def resolve_model_path(path: str | Path) -> Path:
    """A model file from a checkpoint, an exported model or a run directory (its best, else last, checkpoint)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise PykinmlError(f"{path}: a directory but not a pykinml run directory (no checkpoints/best.ckpt)")
    if not path.is_file():
        raise PykinmlError(f"{path}: no such model file or run directory")
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = "float64") -> Model:
    """A :class:`Model` from a checkpoint, a run directory or an exported model; ``dtype=None`` keeps the trained one."""
    path = resolve_model_path(path)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PykinmlError("--device cuda: no CUDA device is available here")
    if _exported(path):
        extra = {EXPORT_METADATA: ""}
        try:
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except Exception as exc:  # noqa: BLE001 - any unreadable archive is the same user error
            raise PykinmlError(f"{path}: not a readable pykinml exported model ({type(exc).__name__})") from None
        meta = json.loads(extra[EXPORT_METADATA])
        if dtype is not None:
            module = module.to(torch_dtype(dtype))
        return Model(module, meta, str(path))
    checkpoint = load_checkpoint(path, "model")
    meta = checkpoint["pykinml"]
    module = standalone_from_checkpoint(checkpoint)
    if dtype is None:
        dtype = meta["config"]["aev"].get("dtype", "float32")
    module = module.to(device=device, dtype=torch_dtype(dtype))
    module.eval()
    return Model(module, meta, str(path))


def standalone_from_checkpoint(checkpoint: dict) -> StandalonePotential:
    """The :class:`StandalonePotential` a pykinml checkpoint describes, with its trained weights (float32)."""
    meta = checkpoint["pykinml"]
    model = meta["config"]["model"]
    params = AEVParams.from_dict(meta["aev"])
    n_levels = len(meta["targets"]) if meta["fidelity"] == "multi" else 1
    potential = ChainedPotential(
        n_levels, params.n_elements, params.length, list(model["neurons"]), model["activations"], bool(model["bias"])
    )
    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    try:
        potential.load_state_dict(state)
    except RuntimeError as exc:
        raise PykinmlError(f"checkpoint weights do not fit the model it describes: {str(exc).splitlines()[0]}") from None
    names = [target["name"] for target in meta["targets"]]
    return StandalonePotential(params, potential, meta["fidelity"], list(meta["levels"]), names)
