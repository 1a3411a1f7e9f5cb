"""``pykinml-db info``: what a database holds, as a stable JSON-able dictionary (format documented in README.md)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from .connection import display_url
from .schema import SCHEMA_VERSION, label_table, level_table, source_table, structure_table
from .splits import split_counts

INFO_FORMAT = 1


def database_info(engine: Engine) -> dict:
    """Counts of structures, atoms, levels (labels, with forces, with stress), names, sources and splits."""
    s, lbl, lvl = structure_table, label_table, level_table
    with engine.connect() as conn:
        structures, atoms = conn.execute(select(func.count(), func.coalesce(func.sum(s.c.natoms), 0))).one()
        levels = conn.execute(
            select(
                lvl.c.name,
                lvl.c.fidelity,
                func.count(lbl.c.id),
                func.count(lbl.c.forces),
                func.count(lbl.c.stress),
            )
            .join(lbl, lbl.c.level_id == lvl.c.id, isouter=True)
            .group_by(lvl.c.id, lvl.c.name, lvl.c.fidelity)
            .order_by(lvl.c.id)
        ).all()
        names = conn.execute(select(s.c.name, func.count()).group_by(s.c.name).order_by(s.c.name)).all()
        formulas = conn.execute(select(s.c.formula, func.count()).group_by(s.c.formula).order_by(s.c.formula)).all()
        sources = conn.execute(
            select(source_table.c.name, source_table.c.format, source_table.c.path).order_by(source_table.c.id)
        ).all()
    return {
        "format": INFO_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "url": display_url(engine.url),
        "structures": int(structures),
        "atoms": int(atoms),
        "levels": [
            {"name": n, "fidelity": f, "labels": int(c), "with_forces": int(cf), "with_stress": int(cs)}
            for n, f, c, cf, cs in levels
        ],
        "names": [{"name": n, "structures": int(c)} for n, c in names],
        "formulas": [{"formula": f, "structures": int(c)} for f, c in formulas],
        "sources": [{"name": n, "format": f, "path": p} for n, f, p in sources],
        "splits": [{"name": name, **counts} for name, counts in split_counts(engine).items()],
    }


def format_info(info: dict) -> str:
    """The human-readable form of :func:`database_info`."""
    lines = [f"{info['url']}: {info['structures']} structures, {info['atoms']} atoms"]
    lines.append("levels:" if info["levels"] else "levels: none")
    for level in info["levels"]:
        fidelity = "" if level["fidelity"] is None else f" (fidelity {level['fidelity']})"
        lines.append(
            f"  {level['name']}{fidelity}: {level['labels']} labels, {level['with_forces']} with forces"
            + (f", {level['with_stress']} with stress" if level["with_stress"] else "")
        )
    lines.append("names: " + (", ".join(f"{n['name']} ({n['structures']})" for n in info["names"]) or "none"))
    lines.append("formulas: " + (", ".join(f"{f['formula']} ({f['structures']})" for f in info["formulas"]) or "none"))
    lines.append("splits:" if info["splits"] else "splits: none")
    for split in info["splits"]:
        lines.append(f"  {split['name']}: train {split['train']}, val {split['val']}, test {split['test']}")
    return "\n".join(lines)
