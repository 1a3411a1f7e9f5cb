"""pykinml-train's Hydra configuration tree, installed as the package ``pykinml.conf``."""
