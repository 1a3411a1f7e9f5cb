"""The demo database shipped inside the package, so ``pykinml-train`` runs with no arguments from anywhere.

600 distorted geometries of six small C/H/N/O molecules labelled with GFN1-xTB (``gfn1``) and GFN2-xTB
(``gfn2``), energies and forces, with a stored split ``default`` (480/60/60). Its human-readable source is
``examples/data/demo.extxyz``; ``examples/make_demo_db.py`` regenerates both.
"""

from pathlib import Path

DEMO_DB = Path(__file__).resolve().with_name("demo.db")
#: levels of the demo database, low -> high
DEMO_LEVELS = ("gfn1", "gfn2")
