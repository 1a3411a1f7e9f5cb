"""Importers: each turns one kind of file into a stream of :class:`pykinml.db.frames.Frame` records."""
