"""The demo database shipped in the package (pykinml/demo/demo.db) opens with this schema and matches its extxyz source."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np

from pykinml.db import open_engine, select_structures
from pykinml.demo import DEMO_DB

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"


def test_demo_database_matches_its_source():
    """Every frame of demo.extxyz is in demo.db with both levels, and the stored split covers it all."""
    frames = ase.io.read(DATA / "demo.extxyz", ":")
    engine = open_engine(DEMO_DB)
    selection = select_structures(engine, levels=["gfn1", "gfn2"], split="default")
    assert len(selection) == len(frames) == 600
    for k in (0, 299, 599):
        sl = selection.atoms_slice(k)
        assert np.array_equal(selection.positions[sl], frames[k].positions)
        assert selection.energies["gfn2"][k] == frames[k].info["gfn2_energy"]
        assert np.array_equal(selection.forces["gfn1"][sl], frames[k].arrays["gfn1_forces"])
    assert np.bincount(selection.subsets).tolist() == [480, 60, 60]
    engine.dispose()
