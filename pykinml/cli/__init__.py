"""Command-line entry points (``pykinml-db``, ``pykinml-train``, ``pykinml-predict``)."""
