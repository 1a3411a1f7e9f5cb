"""The SQL data layer: open a database, import files, select structures and labels, store splits.

>>> from pykinml.db import open_engine, select_structures
"""

from .connection import open_engine, resolve_url
from .export import export_extxyz
from .importers import ImportOptions, import_file
from .info import database_info
from .query import Selection, select_structures
from .readers.labels import LevelKeys, Units
from .splits import assign_split, create_split, export_mask, import_mask

__all__ = [
    "assign_split",
    "ImportOptions",
    "LevelKeys",
    "Selection",
    "Units",
    "create_split",
    "database_info",
    "export_extxyz",
    "export_mask",
    "import_file",
    "import_mask",
    "open_engine",
    "resolve_url",
    "select_structures",
]
