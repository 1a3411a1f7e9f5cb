"""pykinml: multi-fidelity ANI-style neural-network potentials trained from SQL databases."""

__version__ = "0.1.0"
