"""``pykinml-db split`` / ``export-mask`` and pykinml.db.splits, on real files imported into SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from pykinml.db import create_split, export_mask, import_mask, select_structures
from pykinml.db.schema import SUBSETS, provenance_table, source_table, split_assignment_table, split_table
from pykinml.db.splits import read_mask
from pykinml.errors import PykinmlError

from .builders import dump_tables, label, random_molecules, write_extxyz, write_legacy_db
from .checks import ok, user_error

# ---------------------------------------------------------------- helpers




def molecules_file(tmp_path: Path, n: int = 30, seed: int = 1, stem: str = "mols") -> tuple[Path, list]:
    frames = random_molecules(n, seed=seed)
    label(frames, "dft", seed + 100)
    return write_extxyz(tmp_path / f"{stem}.extxyz", frames), frames


def import_molecules(cli, url, path: Path):
    ok(cli("import", path, "--db", url, "--level", "dft=dft_energy,dft_forces"))


def assignments(engine, split: str) -> dict[int, str]:
    """structure id -> subset name, read straight from the split_assignment rows."""
    sa = split_assignment_table
    with engine.connect() as conn:
        rows = conn.execute(
            select(sa.c.structure_id, sa.c.subset)
            .join(split_table, split_table.c.id == sa.c.split_id)
            .where(split_table.c.name == split)
        ).all()
    return {int(structure): SUBSETS[subset] for structure, subset in rows}


def by_subset(assigned: dict[int, str]) -> dict[str, set[int]]:
    return {subset: {i for i, s in assigned.items() if s == subset} for subset in SUBSETS}


def selected_subsets(engine, split: str) -> dict[str, set[int]]:
    """Subset -> structure ids, through select_structures(split=..., subsets=[...])."""
    return {s: set(select_structures(engine, split=split, subsets=[s]).ids.tolist()) for s in SUBSETS}


def provenance(engine) -> dict[str, int]:
    """'<source>/<index>' -> structure id."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(source_table.c.name, provenance_table.c.source_index, provenance_table.c.structure_id).join(
                provenance_table, provenance_table.c.source_id == source_table.c.id
            )
        ).all()
    return {f"{source}/{index}": int(structure) for source, index, structure in rows}


def all_structure_ids(engine) -> set[int]:
    return set(select_structures(engine, forces=False).ids.tolist())


def keyed_assignment(engine, split: str) -> dict[str, str]:
    """'<source>/<index>' -> subset: a split in terms that do not depend on database ids."""
    assigned = assignments(engine, split)
    return {key: assigned[sid] for key, sid in provenance(engine).items() if sid in assigned}


def assert_disjoint_and_consistent(engine, split: str) -> dict[str, set[int]]:
    """Subsets from the rows and from select_structures agree and do not overlap; returns them."""
    rows = by_subset(assignments(engine, split))
    selected = selected_subsets(engine, split)
    assert rows == selected
    assert not rows["train"] & rows["val"]
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]
    return rows


# ---------------------------------------------------------------- fractions


def test_fractions_split_is_disjoint_covers_everything_and_follows_fractions(db_url, cli, tmp_path, engine_of):
    """--fractions 0.6 0.2 0.2 over 30 structures: 18/6/6, disjoint, union = every structure."""
    path, frames = molecules_file(tmp_path, n=30)
    import_molecules(cli, db_url, path)
    result = ok(cli("split", "--db", db_url, "--name", "main", "--fractions", "0.6", "0.2", "0.2", "--seed", "7"))
    assert "train 18" in result.out and "val 6" in result.out and "test 6" in result.out
    engine = engine_of(db_url)
    subsets = assert_disjoint_and_consistent(engine, "main")
    assert {s: len(ids) for s, ids in subsets.items()} == {"train": 18, "val": 6, "test": 6}
    assert subsets["train"] | subsets["val"] | subsets["test"] == all_structure_ids(engine)
    assert len(all_structure_ids(engine)) == len(frames)


def test_fractions_split_records_method_and_seed(db_url, cli, tmp_path, engine_of):
    """The split row remembers the seed and that it came from fractions."""
    path, _ = molecules_file(tmp_path, n=12)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "s", "--fractions", "0.5", "0.25", "0.25", "--seed", "11"))
    with engine_of(db_url).connect() as conn:
        method, seed = conn.execute(select(split_table.c.method, split_table.c.seed)).one()
    assert seed == 11
    assert method.startswith("fractions")


def test_uneven_fractions_still_cover_every_structure(db_url, cli, tmp_path, engine_of):
    """Rounding never loses a structure: 0.7/0.2/0.1 of 29 → 20/6/3."""
    path, _ = molecules_file(tmp_path, n=29)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "s", "--fractions", "0.7", "0.2", "0.1"))
    engine = engine_of(db_url)
    subsets = assert_disjoint_and_consistent(engine, "s")
    n_train, n_val = round(0.7 * 29), round(0.2 * 29)
    assert {s: len(v) for s, v in subsets.items()} == {"train": n_train, "val": n_val, "test": 29 - n_train - n_val}
    assert set().union(*subsets.values()) == all_structure_ids(engine)


def test_same_seed_same_split_in_a_new_database(db_url, other_db_url, cli, tmp_path, engine_of):
    """Two databases built from the same files get the same split for the same seed."""
    path, _ = molecules_file(tmp_path, n=30)
    legacy = write_legacy_db(tmp_path / "C2H2.db", "C2H2", 4, 8, seed=3)
    for url in (db_url, other_db_url):
        import_molecules(cli, url, path)
        ok(cli("import", legacy, "--db", url))
        ok(cli("split", "--db", url, "--name", "s", "--fractions", "0.6", "0.2", "0.2", "--seed", "5"))
    first = keyed_assignment(engine_of(db_url), "s")
    second = keyed_assignment(engine_of(other_db_url), "s")
    assert len(first) == 38
    assert first == second


def test_different_seed_gives_a_different_split(db_url, cli, tmp_path, engine_of):
    """Seeds 1 and 2 over 30 structures do not give the same assignment (but the same sizes)."""
    path, _ = molecules_file(tmp_path, n=30)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "a", "--fractions", "0.6", "0.2", "0.2", "--seed", "1"))
    ok(cli("split", "--db", db_url, "--name", "b", "--fractions", "0.6", "0.2", "0.2", "--seed", "2"))
    engine = engine_of(db_url)
    a, b = assignments(engine, "a"), assignments(engine, "b")
    assert a != b
    assert {s: len(v) for s, v in by_subset(a).items()} == {s: len(v) for s, v in by_subset(b).items()}


@pytest.mark.parametrize("fractions", [["0.5", "0.5", "0.5"], ["1.2", "-0.1", "-0.1"], ["0.5", "0.3", "0.1"]])
def test_fractions_that_are_not_a_partition_are_a_user_error(db_url, cli, tmp_path, fractions):
    """Fractions must be non-negative and sum to 1: exit 2 and no split stored."""
    path, _ = molecules_file(tmp_path, n=6)
    import_molecules(cli, db_url, path)
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "s", "--fractions", *fractions), "--fractions")
    assert dump_tables(db_url) == before


# ---------------------------------------------------------------- counts


def test_counts_split_takes_exactly_those_counts_and_leaves_the_rest_out(db_url, cli, tmp_path, engine_of):
    """--counts 7 3 4 of 30: exactly 7/3/4, the other 16 structures are in no subset."""
    path, _ = molecules_file(tmp_path, n=30)
    import_molecules(cli, db_url, path)
    result = ok(cli("split", "--db", db_url, "--name", "c", "--counts", "7", "3", "4", "--seed", "3"))
    assert "train 7, val 3, test 4" in result.out
    engine = engine_of(db_url)
    subsets = assert_disjoint_and_consistent(engine, "c")
    assert {s: len(v) for s, v in subsets.items()} == {"train": 7, "val": 3, "test": 4}
    assigned = set(assignments(engine, "c"))
    assert len(assigned) == 14
    assert len(all_structure_ids(engine) - assigned) == 16
    assert len(select_structures(engine, split="c").ids) == 14


def test_counts_equal_to_the_structure_count_is_allowed(db_url, cli, tmp_path, engine_of):
    """Asking for exactly every structure works and covers them all."""
    path, _ = molecules_file(tmp_path, n=9)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "c", "--counts", "5", "2", "2"))
    engine = engine_of(db_url)
    assert set(assignments(engine, "c")) == all_structure_ids(engine)


def test_counts_larger_than_the_database_are_a_one_line_error(db_url, cli, tmp_path):
    """--counts summing past the structure count: exit 2, message gives both numbers, nothing stored."""
    path, _ = molecules_file(tmp_path, n=10)
    import_molecules(cli, db_url, path)
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "c", "--counts", "6", "3", "2"), "11", "10")
    assert dump_tables(db_url) == before


def test_negative_counts_are_a_user_error(db_url, cli, tmp_path):
    """A negative count: exit 2, nothing stored."""
    path, _ = molecules_file(tmp_path, n=10)
    import_molecules(cli, db_url, path)
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "c", "--counts", "3", "-1", "2"), "--counts")
    assert dump_tables(db_url) == before


# ---------------------------------------------------------------- existing splits, --replace


def test_existing_split_without_replace_is_refused_and_nothing_changes(db_url, cli, tmp_path):
    """A second split of the same name without --replace: exit 2 naming the split, DB byte-for-byte unchanged."""
    path, _ = molecules_file(tmp_path, n=12)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "s", "--counts", "4", "2", "2", "--seed", "1"))
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "s", "--fractions", "0.5", "0.25", "0.25"), "'s'", "--replace")
    assert dump_tables(db_url) == before


def test_replace_overwrites_the_split_and_leaves_other_splits_alone(db_url, cli, tmp_path, engine_of):
    """--replace swaps in the new assignment, keeps one split row of that name, and does not touch other splits."""
    path, _ = molecules_file(tmp_path, n=12)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "s", "--counts", "4", "2", "2", "--seed", "1"))
    ok(cli("split", "--db", db_url, "--name", "other", "--counts", "3", "3", "3", "--seed", "9"))
    engine = engine_of(db_url)
    other_before = assignments(engine, "other")
    ok(cli("split", "--db", db_url, "--name", "s", "--fractions", "0.5", "0.25", "0.25", "--replace"))
    subsets = assert_disjoint_and_consistent(engine, "s")
    assert {k: len(v) for k, v in subsets.items()} == {"train": 6, "val": 3, "test": 3}
    assert assignments(engine, "other") == other_before
    with engine.connect() as conn:
        names = conn.execute(select(split_table.c.name).order_by(split_table.c.name)).scalars().all()
        rows = conn.execute(select(func.count()).select_from(split_assignment_table)).scalar()
        method = conn.execute(select(split_table.c.method).where(split_table.c.name == "s")).scalar()
    assert names == ["other", "s"]
    assert rows == 12 + 9
    assert method.startswith("fractions")


def test_failed_replace_keeps_the_old_split(db_url, cli, tmp_path):
    """--replace with counts that cannot be met fails before touching the stored split."""
    path, _ = molecules_file(tmp_path, n=12)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "s", "--counts", "4", "2", "2"))
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "s", "--counts", "10", "2", "2", "--replace"))
    assert dump_tables(db_url) == before


# ---------------------------------------------------------------- --levels, --names


def test_levels_restrict_the_split_to_labelled_structures(db_url, cli, tmp_path, engine_of):
    """--levels fidelity_1 splits only the odd xyz ids of a legacy file (the ones with a fidelity-1 label)."""
    legacy = write_legacy_db(tmp_path / "C2H2.db", "C2H2", 4, 12, seed=2)
    ok(cli("import", legacy, "--db", db_url))
    ok(cli("split", "--db", db_url, "--name", "hi", "--fractions", "0.5", "0.25", "0.25", "--levels", "fidelity_1"))
    engine = engine_of(db_url)
    prov = provenance(engine)
    odd = {prov[f"C2H2/{k}"] for k in range(1, 13, 2)}
    subsets = assert_disjoint_and_consistent(engine, "hi")
    assert set().union(*subsets.values()) == odd
    assert {k: len(v) for k, v in subsets.items()} == {"train": 3, "val": 2, "test": 1}


def test_several_levels_require_all_of_them(db_url, cli, tmp_path, engine_of):
    """--levels fidelity_0 fidelity_1 keeps structures labelled at both (the odd ids); fidelity_0 alone keeps all."""
    legacy = write_legacy_db(tmp_path / "C2H2.db", "C2H2", 4, 10, seed=2)
    ok(cli("import", legacy, "--db", db_url))
    ok(cli("split", "--db", db_url, "--name", "both", "--counts", "5", "0", "0", "--levels", "fidelity_0", "fidelity_1"))
    ok(cli("split", "--db", db_url, "--name", "low", "--fractions", "1", "0", "0", "--levels", "fidelity_0"))
    engine = engine_of(db_url)
    prov = provenance(engine)
    assert set(assignments(engine, "both")) == {prov[f"C2H2/{k}"] for k in (1, 3, 5, 7, 9)}
    assert set(assignments(engine, "low")) == set(prov.values())


def test_unknown_level_is_a_user_error_naming_it(db_url, cli, tmp_path):
    """--levels with a level the database lacks: exit 2 naming the level, nothing stored."""
    path, _ = molecules_file(tmp_path, n=6)
    import_molecules(cli, db_url, path)
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "s", "--counts", "1", "1", "1", "--levels", "ccsdt"), "ccsdt")
    assert dump_tables(db_url) == before


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["H2O"], {"H2O"}),
        (["CH4", "C2H3N"], {"CH4", "C2H3N"}),
        (["C%"], {"CH4", "C2H3N"}),
        (["H2O", "C2%"], {"H2O", "C2H3N"}),
        (["%"], {"CH4", "H2O", "C2H3N"}),
    ],
)
def test_names_restrict_the_split(db_url, cli, tmp_path, engine_of, names, expected):
    """--names keeps exactly the structures whose name matches (exact or a % LIKE pattern)."""
    path, frames = molecules_file(tmp_path, n=18)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "n", "--fractions", "0.5", "0.5", "0", "--names", *names))
    engine = engine_of(db_url)
    chosen = set(assignments(engine, "n"))
    selection = select_structures(engine, forces=False)
    name_of = dict(zip(selection.ids.tolist(), selection.names.tolist()))
    assert {name_of[i] for i in chosen} == expected
    assert len(chosen) == sum(atoms.info["name"] in expected for atoms in frames)


def test_names_and_levels_combine(db_url, cli, tmp_path, engine_of):
    """--names and --levels together keep the intersection (legacy tag '111' = odd ids; fidelity_1 = odd ids)."""
    legacy = write_legacy_db(tmp_path / "C2H2.db", "C2H2", 4, 10, seed=4)
    ok(cli("import", legacy, "--db", db_url))
    ok(cli("split", "--db", db_url, "--name", "s", "--fractions", "1", "0", "0",
           "--names", "222", "--levels", "fidelity_0"))
    engine = engine_of(db_url)
    prov = provenance(engine)
    assert set(assignments(engine, "s")) == {prov[f"C2H2/{k}"] for k in (2, 4, 6, 8, 10)}


# ---------------------------------------------------------------- PyKinML mask files


def legacy_pair(tmp_path: Path) -> dict[str, int]:
    """Two PyKinML files, C2H2.db (12 rows) and C2H3.db (10 rows); returns rows per source."""
    write_legacy_db(tmp_path / "C2H2.db", "C2H2", 4, 12, seed=1)
    write_legacy_db(tmp_path / "C2H3.db", "C2H3", 5, 10, seed=2)
    return {"C2H2": 12, "C2H3": 10}


def import_legacy_pair(cli, url, tmp_path: Path) -> dict[str, int]:
    sources = legacy_pair(tmp_path)
    ok(cli("import", tmp_path / "C2H2.db", tmp_path / "C2H3.db", "--db", url))
    return sources


def mask_flags(sources: dict[str, int]) -> dict[str, int]:
    """'<formula>/<id>' -> flag: every id divisible by 4 is test, the rest the train/val pool."""
    return {f"{s}/{k}": (-1 if k % 4 == 0 else 2) for s, n in sources.items() for k in range(1, n + 1)}


def write_mask(path: Path, flags: dict[str, int], extra: str = "") -> Path:
    """A mask file with a third column (energy-like number) and more junk, as PyKinML writes them."""
    lines = [f"{key} {flag} {-2100.0 - k * 0.37!r} junk{extra}\n" for k, (key, flag) in enumerate(flags.items())]
    path.write_text("".join(lines))
    return path


def test_mask_puts_exactly_the_minus_one_lines_in_test(db_url, cli, tmp_path, engine_of):
    """-1 lines → test, 2 lines → train ∪ val, val = round(val_fraction × pool), no test structure in train/val."""
    sources = import_legacy_pair(cli, db_url, tmp_path)
    flags = mask_flags(sources)
    mask = write_mask(tmp_path / "tvt.txt", flags)
    result = ok(cli("split", "--db", db_url, "--name", "m", "--mask", mask, "--val-fraction", "0.3", "--seed", "4"))
    engine = engine_of(db_url)
    prov = provenance(engine)
    test = {prov[key] for key, flag in flags.items() if flag == -1}
    pool = {prov[key] for key, flag in flags.items() if flag == 2}
    subsets = assert_disjoint_and_consistent(engine, "m")
    assert len(test) == 5 and len(pool) == 17
    assert subsets["test"] == test
    assert subsets["train"] | subsets["val"] == pool
    assert len(subsets["val"]) == round(0.3 * len(pool))
    assert not (subsets["train"] | subsets["val"]) & test  # PyKinML's old test-in-training leak
    assert f"test {len(test)}" in result.out


def test_mask_default_val_fraction_is_a_tenth_of_the_pool(db_url, cli, tmp_path, engine_of):
    """Without --val-fraction, val is round(0.1 × pool)."""
    sources = import_legacy_pair(cli, db_url, tmp_path)
    flags = mask_flags(sources)
    ok(cli("split", "--db", db_url, "--name", "m", "--mask", write_mask(tmp_path / "tvt.txt", flags)))
    subsets = by_subset(assignments(engine_of(db_url), "m"))
    pool = sum(flag == 2 for flag in flags.values())
    assert len(subsets["val"]) == round(0.1 * pool)
    assert len(subsets["train"]) == pool - round(0.1 * pool)


def test_mask_seed_moves_val_but_never_test(db_url, cli, tmp_path, engine_of):
    """Two seeds: the same test set, different val sets of the same size."""
    sources = import_legacy_pair(cli, db_url, tmp_path)
    mask = write_mask(tmp_path / "tvt.txt", mask_flags(sources))
    ok(cli("split", "--db", db_url, "--name", "a", "--mask", mask, "--val-fraction", "0.4", "--seed", "1"))
    ok(cli("split", "--db", db_url, "--name", "b", "--mask", mask, "--val-fraction", "0.4", "--seed", "2"))
    engine = engine_of(db_url)
    a, b = by_subset(assignments(engine, "a")), by_subset(assignments(engine, "b"))
    assert a["test"] == b["test"]
    assert len(a["val"]) == len(b["val"]) == round(0.4 * 17)
    assert a["val"] != b["val"]


def test_mask_covering_part_of_the_database_leaves_the_rest_unassigned(db_url, cli, tmp_path, engine_of):
    """Structures the mask does not name are in no subset; comments and blank lines are skipped."""
    import_legacy_pair(cli, db_url, tmp_path)
    mask = tmp_path / "part.txt"
    mask.write_text("# header comment\nC2H2/1 2 x\n\nC2H2/2 -1 y\nC2H3/7 2\n")
    ok(cli("split", "--db", db_url, "--name", "m", "--mask", mask, "--val-fraction", "0"))
    engine = engine_of(db_url)
    prov = provenance(engine)
    assert assignments(engine, "m") == {prov["C2H2/1"]: "train", prov["C2H2/2"]: "test", prov["C2H3/7"]: "train"}


def test_mask_on_extxyz_uses_zero_based_frame_indices(db_url, cli, tmp_path, engine_of):
    """For an extxyz source the id is the 0-based frame index and the source the file stem."""
    path, frames = molecules_file(tmp_path, n=8, stem="traj")
    import_molecules(cli, db_url, path)
    mask = tmp_path / "m.txt"
    mask.write_text("traj/0 -1\ntraj/7 -1\n" + "".join(f"traj/{k} 2\n" for k in range(1, 7)))
    ok(cli("split", "--db", db_url, "--name", "m", "--mask", mask, "--val-fraction", "0"))
    engine = engine_of(db_url)
    test_ids = by_subset(assignments(engine, "m"))["test"]
    selection = select_structures(engine, levels=["dft"], split="m", subsets=["test"])
    assert set(selection.ids.tolist()) == test_ids
    energies = sorted(selection.energies["dft"].tolist())
    assert energies == sorted([frames[0].info["dft_energy"], frames[7].info["dft_energy"]])


def test_export_mask_round_trips_the_flags(db_url, cli, tmp_path, engine_of):
    """export-mask writes back exactly the (source/id, flag) pairs that were imported (train and val → 2)."""
    sources = import_legacy_pair(cli, db_url, tmp_path)
    flags = mask_flags(sources)
    ok(cli("split", "--db", db_url, "--name", "m", "--mask", write_mask(tmp_path / "in.txt", flags),
           "--val-fraction", "0.25"))
    out = tmp_path / "out.txt"
    result = ok(cli("export-mask", "--db", db_url, "--split", "m", "-o", out))
    assert f"{len(flags)} lines" in result.out
    lines = out.read_text().splitlines()
    exported = {line.split()[0]: int(line.split()[1]) for line in lines}
    assert len(lines) == len(flags)
    assert exported == flags


def test_export_mask_of_a_fractions_split(db_url, cli, tmp_path, engine_of):
    """A random split exports as train/val → 2 and test → -1, one line per assigned structure."""
    path, _ = molecules_file(tmp_path, n=20, stem="traj")
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "r", "--counts", "6", "4", "5", "--seed", "8"))
    out = tmp_path / "r.txt"
    ok(cli("export-mask", "--db", db_url, "--split", "r", "-o", out))
    engine = engine_of(db_url)
    assigned = keyed_assignment(engine, "r")
    exported = dict(line.split() for line in out.read_text().splitlines())
    assert exported == {key: ("-1" if subset == "test" else "2") for key, subset in assigned.items()}
    assert list(exported.values()).count("-1") == 5


def test_export_mask_then_import_mask_gives_the_same_test_set(db_url, other_db_url, cli, tmp_path, engine_of):
    """A mask exported from one database applies to another built from the same files: same test set."""
    sources = legacy_pair(tmp_path)
    files = [tmp_path / f"{s}.db" for s in sources]
    for url in (db_url, other_db_url):
        ok(cli("import", *files, "--db", url))
    ok(cli("split", "--db", db_url, "--name", "r", "--fractions", "0.5", "0.2", "0.3", "--seed", "3"))
    ok(cli("export-mask", "--db", db_url, "--split", "r", "-o", tmp_path / "r.txt"))
    ok(cli("split", "--db", other_db_url, "--name", "r", "--mask", tmp_path / "r.txt"))
    first, second = keyed_assignment(engine_of(db_url), "r"), keyed_assignment(engine_of(other_db_url), "r")
    assert {k for k, s in first.items() if s == "test"} == {k for k, s in second.items() if s == "test"}
    assert set(first) == set(second)


def test_export_mask_of_an_unknown_split_is_a_user_error(db_url, cli, tmp_path):
    """export-mask --split nope: exit 2 naming the split, no file written."""
    path, _ = molecules_file(tmp_path, n=4)
    import_molecules(cli, db_url, path)
    out = tmp_path / "m.txt"
    user_error(cli("export-mask", "--db", db_url, "--split", "nope", "-o", out), "'nope'")
    assert not out.exists()


def test_export_mask_into_a_missing_directory_is_a_user_error(db_url, cli, tmp_path):
    """export-mask -o into a directory that does not exist: exit 2, nothing written."""
    path, _ = molecules_file(tmp_path, n=4)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "s", "--counts", "2", "1", "1"))
    user_error(cli("export-mask", "--db", db_url, "--split", "s", "-o", tmp_path / "missing" / "m.txt"), "missing")
    assert not (tmp_path / "missing").exists()


# ---------------------------------------------------------------- bad masks


BAD_LINES = [
    ("C2H2/99 2 -2100.5", "C2H2/99"),  # id not in the source
    ("C9H9/1 2 -2100.5", "C9H9/1"),  # source not in the database
    ("C2H2/3 3 -2100.5", "'3'"),  # flag neither 2 nor -1
    ("C2H2/3 1", "'1'"),
    ("C2H2-3 2 -2100.5", "expected"),  # no slash
    ("C2H2/x 2", "expected"),  # id not an integer
    ("C2H2/3", "expected"),  # no flag
    ("/3 2", "expected"),  # no source
]


@pytest.mark.parametrize(("line", "fragment"), BAD_LINES)
def test_bad_mask_line_is_a_one_line_error_naming_file_and_line(db_url, cli, tmp_path, line, fragment):
    """A bad third line: exit 2, '<mask>:3' and the culprit in a one-line message, database unchanged."""
    import_legacy_pair(cli, db_url, tmp_path)
    mask = tmp_path / "bad_mask.txt"
    mask.write_text(f"C2H2/1 2 -2100.1\nC2H2/2 -1 -2100.2\n{line}\nC2H2/4 2 -2100.4\n")
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "m", "--mask", mask), f"{mask}:3", fragment)
    assert dump_tables(db_url) == before


def test_bad_mask_with_replace_keeps_the_existing_split(db_url, cli, tmp_path):
    """A bad mask with --replace fails before the stored split of that name is touched."""
    sources = import_legacy_pair(cli, db_url, tmp_path)
    ok(cli("split", "--db", db_url, "--name", "m", "--mask", write_mask(tmp_path / "good.txt", mask_flags(sources))))
    before = dump_tables(db_url)
    bad = tmp_path / "bad.txt"
    bad.write_text("C2H2/1 2\nC2H2/2 2\nC2H2/3 2\nC2H2/4 2\nC2H2/500 -1\n")
    user_error(cli("split", "--db", db_url, "--name", "m", "--mask", bad, "--replace"), f"{bad}:5", "C2H2/500")
    assert dump_tables(db_url) == before


def import_with_repeated_frame(cli, db_url, tmp_path, n: int) -> None:
    """Import dup.extxyz: ``n`` frames whose last one repeats frame 0 (same geometry and labels)."""
    frames = random_molecules(n, seed=5)
    frames[-1] = frames[0].copy()
    label(frames, "dft", 6)
    frames[-1].info["dft_energy"] = frames[0].info["dft_energy"]
    frames[-1].arrays["dft_forces"] = frames[0].arrays["dft_forces"].copy()
    import_molecules(cli, db_url, write_extxyz(tmp_path / "dup.extxyz", frames))


def test_mask_giving_one_structure_two_flags_is_an_error(db_url, cli, tmp_path):
    """Frames 0 and 3 of a file are the same geometry; flagging one 2 and the other -1 names both lines."""
    import_with_repeated_frame(cli, db_url, tmp_path, 4)
    mask = tmp_path / "m.txt"
    mask.write_text("dup/0 2\ndup/1 2\ndup/2 -1\ndup/3 -1\n")
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "m", "--mask", mask), f"{mask}:4", "line 1")
    assert dump_tables(db_url) == before


def test_mask_naming_one_structure_twice_with_the_same_flag_counts_it_once(db_url, cli, tmp_path, engine_of):
    """Two provenance entries of one geometry with the same flag: one structure, one assignment."""
    import_with_repeated_frame(cli, db_url, tmp_path, 3)
    mask = tmp_path / "m.txt"
    mask.write_text("dup/0 -1\ndup/1 2\ndup/2 -1\n")
    result = ok(cli("split", "--db", db_url, "--name", "m", "--mask", mask, "--val-fraction", "0"))
    assert "train 1, val 0, test 1" in result.out
    assert len(assignments(engine_of(db_url), "m")) == 2


@pytest.mark.parametrize("content", ["", "# only a comment\n\n"])
def test_empty_mask_is_a_user_error(db_url, cli, tmp_path, content):
    """A mask without entries: exit 2 naming the file, nothing stored."""
    import_legacy_pair(cli, db_url, tmp_path)
    mask = tmp_path / "empty.txt"
    mask.write_text(content)
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "m", "--mask", mask), str(mask))
    assert dump_tables(db_url) == before


def test_missing_mask_file_is_a_user_error(db_url, cli, tmp_path):
    """--mask naming no file: exit 2 naming it."""
    import_legacy_pair(cli, db_url, tmp_path)
    user_error(cli("split", "--db", db_url, "--name", "m", "--mask", tmp_path / "nope.txt"), "nope.txt")


@pytest.mark.parametrize("fraction", ["1.0", "-0.1", "1.5"])
def test_val_fraction_outside_zero_one_is_a_user_error(db_url, cli, tmp_path, fraction):
    """--val-fraction must be in [0, 1): exit 2, nothing stored."""
    sources = import_legacy_pair(cli, db_url, tmp_path)
    mask = write_mask(tmp_path / "tvt.txt", mask_flags(sources))
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "m", "--mask", mask, "--val-fraction", fraction),
               "--val-fraction")
    assert dump_tables(db_url) == before


# ---------------------------------------------------------------- seeds


def test_negative_seed_is_a_user_error(db_url, cli, tmp_path):
    """--seed -1: exit 2 naming the seed, nothing stored."""
    path, _ = molecules_file(tmp_path, n=6)
    import_molecules(cli, db_url, path)
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "s", "--counts", "1", "1", "1", "--seed", "-1"), "seed")
    assert dump_tables(db_url) == before


def test_large_seed_behaves_the_same_on_every_backend(db_url, cli, tmp_path):
    """--seed 3000000000 either works or is a one-line user error, whatever the backend."""
    path, _ = molecules_file(tmp_path, n=6)
    import_molecules(cli, db_url, path)
    result = cli("split", "--db", db_url, "--name", "s", "--counts", "1", "1", "1", "--seed", "3000000000")
    if result.code != 0:
        user_error(result, "seed")


# ---------------------------------------------------------------- the Python API


def test_create_split_returns_the_counts_it_stored(db_url, cli, tmp_path, engine_of):
    """create_split(...) returns {'train', 'val', 'test'} counts matching the rows."""
    path, _ = molecules_file(tmp_path, n=10)
    import_molecules(cli, db_url, path)
    engine = engine_of(db_url)
    counts = create_split(engine, "py", counts=[4, 3, 2], seed=1)
    assert counts == {"train": 4, "val": 3, "test": 2}
    assert {k: len(v) for k, v in by_subset(assignments(engine, "py")).items()} == counts


def test_create_split_needs_exactly_one_of_fractions_and_counts(db_url, cli, tmp_path, engine_of):
    """Neither or both of fractions/counts raise PykinmlError."""
    path, _ = molecules_file(tmp_path, n=4)
    import_molecules(cli, db_url, path)
    engine = engine_of(db_url)
    with pytest.raises(PykinmlError, match="exactly one"):
        create_split(engine, "x")
    with pytest.raises(PykinmlError, match="exactly one"):
        create_split(engine, "x", fractions=[1, 0, 0], counts=[1, 0, 0])
    assert assignments(engine, "x") == {}


def test_create_split_is_reproducible_by_seed(db_url, cli, tmp_path, engine_of):
    """The same seed through the Python API twice (with replace) gives the same assignment."""
    path, _ = molecules_file(tmp_path, n=15)
    import_molecules(cli, db_url, path)
    engine = engine_of(db_url)
    create_split(engine, "s", fractions=[0.6, 0.2, 0.2], seed=42)
    first = assignments(engine, "s")
    create_split(engine, "s", fractions=[0.6, 0.2, 0.2], seed=42, replace=True)
    assert assignments(engine, "s") == first
    with pytest.raises(PykinmlError, match="already exists"):
        create_split(engine, "s", fractions=[0.6, 0.2, 0.2], seed=42)


def test_import_and_export_mask_python_api(db_url, cli, tmp_path, engine_of):
    """import_mask returns the counts; export_mask returns the line count and writes the flags."""
    sources = import_legacy_pair(cli, db_url, tmp_path)
    flags = mask_flags(sources)
    engine = engine_of(db_url)
    counts = import_mask(engine, "m", str(write_mask(tmp_path / "in.txt", flags)), val_fraction=0.2, seed=3)
    pool = sum(f == 2 for f in flags.values())
    assert counts == {"train": pool - round(0.2 * pool), "val": round(0.2 * pool), "test": len(flags) - pool}
    out = tmp_path / "out.txt"
    assert export_mask(engine, "m", str(out)) == len(flags)
    assert {line.split()[0]: int(line.split()[1]) for line in out.read_text().splitlines()} == flags


def test_read_mask_parses_lines_and_ignores_extra_columns(tmp_path):
    """read_mask gives (line, source, id, flag), skipping comments and blank lines; source may contain '/'."""
    mask = tmp_path / "m.txt"
    mask.write_text("# c\nC5H5/12 2 -5000.25 more\n\n  C5H5/7\t-1\nrun/a/3 2\n")
    assert read_mask(str(mask)) == [(2, "C5H5", 12, 2), (4, "C5H5", 7, -1), (5, "run/a", 3, 2)]


def test_select_structures_rejects_an_unknown_split(db_url, cli, tmp_path, engine_of):
    """Selecting by a split that does not exist names it and lists the ones that do."""
    path, _ = molecules_file(tmp_path, n=4)
    import_molecules(cli, db_url, path)
    ok(cli("split", "--db", db_url, "--name", "real", "--counts", "1", "1", "1"))
    with pytest.raises(PykinmlError, match="'ghost'.*real"):
        select_structures(engine_of(db_url), split="ghost", subsets=["test"])


# ---------------------------------------------------------------- the original PyKinML example data


def mask_lines(path: Path) -> dict[str, int]:
    return {line.split()[0]: int(line.split()[1]) for line in path.read_text().splitlines() if line.strip()}


def test_reference_mf_tvt_mask_on_the_four_small_pykinml_dbs(db_url, cli, shared_data, engine_of):
    """mf_tvt.txt over C2H2/C2H3/C3H2/C3H3.db: test = the -1 lines, pool = the 2 lines, disjoint."""
    data = shared_data / "pykinml"
    ok(cli("import", *(data / f"{f}.db" for f in ("C2H2", "C2H3", "C3H2", "C3H3")), "--db", db_url))
    mask = data / "mf_tvt.txt"
    ok(cli("split", "--db", db_url, "--name", "mf", "--mask", mask))
    flags = mask_lines(mask)
    engine = engine_of(db_url)
    prov = provenance(engine)
    subsets = assert_disjoint_and_consistent(engine, "mf")
    n_test = sum(f == -1 for f in flags.values())
    assert len(subsets["test"]) == n_test
    assert subsets["test"] == {prov[k] for k, f in flags.items() if f == -1}
    assert subsets["train"] | subsets["val"] == {prov[k] for k, f in flags.items() if f == 2}
    assert len(subsets["val"]) == round(0.1 * (len(flags) - n_test))


def test_reference_sample_tvt_mask_on_c5h5(db_url, cli, shared_data, engine_of):
    """sample_tvt.txt over C5H5.db: test count = number of -1 lines, disjoint subsets cover every line."""
    data = shared_data / "pykinml"
    ok(cli("import", data / "C5H5.db", "--db", db_url))
    mask = data / "sample_tvt.txt"
    ok(cli("split", "--db", db_url, "--name", "c5", "--mask", mask, "--val-fraction", "0.2", "--seed", "1"))
    flags = mask_lines(mask)
    engine = engine_of(db_url)
    subsets = assert_disjoint_and_consistent(engine, "c5")
    n_test = sum(f == -1 for f in flags.values())
    assert len(subsets["test"]) == n_test
    assert len(subsets["train"]) + len(subsets["val"]) == len(flags) - n_test
    assert len(subsets["val"]) == round(0.2 * (len(flags) - n_test))
    prov = provenance(engine)
    assert subsets["test"] == {prov[k] for k, f in flags.items() if f == -1}
    assert np.all(np.isin(list(subsets["test"]), list(select_structures(engine, forces=False).ids)))


def test_split_of_nothing_and_val_fraction_without_mask_are_errors(db_url, cli, tmp_path):
    """A split whose selection is empty, or --val-fraction with --fractions: exit 2, nothing stored."""
    path, _ = molecules_file(tmp_path, n=6)
    import_molecules(cli, db_url, path)
    before = dump_tables(db_url)
    user_error(cli("split", "--db", db_url, "--name", "s", "--fractions", "1", "0", "0", "--names", "nobody"),
               "no structure matches")
    user_error(cli("split", "--db", db_url, "--name", "s", "--fractions", "1", "0", "0", "--val-fraction", "0.2"),
               "--val-fraction goes with --mask")
    assert dump_tables(db_url) == before


def test_assign_split_stores_explicit_subsets(tmp_path):
    """assign_split stores exactly the given ids per subset and refuses an id in two subsets."""
    import shutil

    from pykinml.db import assign_split, open_engine, select_structures
    from pykinml.demo import DEMO_DB
    from pykinml.errors import PykinmlError

    path = tmp_path / "demo.db"
    shutil.copy(DEMO_DB, path)
    engine = open_engine(path)
    ids = select_structures(engine, forces=False).ids
    counts = assign_split(engine, "mine", {"train": ids[:10], "val": ids[10:13], "test": ids[-2:]})
    assert counts == {"train": 10, "val": 3, "test": 2}
    chosen = select_structures(engine, split="mine", forces=False)
    assert list(chosen.ids) == sorted([*ids[:13], *ids[-2:]])
    assert list(select_structures(engine, split="mine", subsets=["val"], forces=False).ids) == list(ids[10:13])
    with pytest.raises(PykinmlError, match="more than one subset"):
        assign_split(engine, "bad", {"train": ids[:3], "test": ids[2:4]})
    with pytest.raises(PykinmlError, match="already exists"):
        assign_split(engine, "mine", {"train": ids[:3]})


def test_test_names_make_a_fixed_test_set_and_the_rest_is_split_at_random(db_url, cli, tmp_path, engine_of):
    """A benchmark's own test file (imported under its own name) is the test set; the training file's
    structures are split into train and val."""
    train_path, _ = molecules_file(tmp_path, n=30, seed=1, stem="train")
    test_path, _ = molecules_file(tmp_path, n=7, seed=2, stem="test")
    ok(cli("import", train_path, "--db", db_url, "--level", "dft=dft_energy,dft_forces", "--name", "bench-train"))
    ok(cli("import", test_path, "--db", db_url, "--level", "dft=dft_energy,dft_forces", "--name", "bench-test"))
    result = ok(cli("split", "--db", db_url, "--name", "fixed", "--fractions", "0.8", "0.2", "0",
                    "--names", "bench-train", "--test-names", "bench-test"))
    assert "train 24, val 6, test 7" in result.out
    engine = engine_of(db_url)
    subsets = assert_disjoint_and_consistent(engine, "fixed")
    named_test = set(select_structures(engine, names=["bench-test"], forces=False).ids.tolist())
    assert subsets["test"] == named_test
    user_error(cli("split", "--db", db_url, "--name", "none", "--fractions", "0.8", "0.2", "0",
                   "--test-names", "no-such-name"), "no structure has a name in --test-names")
