"""save/load: atomic writes, matching paths, and one clear error for every bad file (issue 10)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysketch import CountMinSketch, CountSketch
from tests.test_countmin import _tamper

ROOT = Path(__file__).resolve().parents[1]


def count_sketch(seed=3):
    x = np.random.default_rng(seed).standard_normal(300)
    return CountSketch(300, 5, 32, seed=seed).accumulate(x)


def count_min(conservative=False):
    return CountMinSketch(3, 16, conservative=conservative).update(
        [1, 2, 1, 9], [2.0, 1.0, 0.5, 4.0]
    )


SKETCHES = {"CountSketch": count_sketch, "CountMinSketch": count_min}


def same(a, b):
    assert a.params == b.params
    np.testing.assert_array_equal(a.table_to_host(), b.table_to_host())
    assert getattr(a, "total_weight", None) == getattr(b, "total_weight", None)


def fields_of(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def rewrite(path, **changes):
    """``path`` with its fields changed (``None`` drops one), written in place."""
    _tamper(path, path, **changes)
    return path


# ------------------------------------------------------------------ item 1: paths
@pytest.mark.parametrize("kind", SKETCHES)
@pytest.mark.parametrize("name", ["ckpt", "ckpt.npz", "dir.v2/ckpt.tar"])
def test_load_reads_what_save_wrote_for_the_same_path(tmp_path, kind, name):
    sketch = SKETCHES[kind]()
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    written = sketch.save(path)
    assert written == (path if name.endswith(".npz") else path.with_name(path.name + ".npz"))
    assert written.is_file()
    for spelling in (path, str(path), written):
        same(type(sketch).load(spelling), sketch)


def test_path_must_be_a_path(tmp_path):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        count_sketch().save(3)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        CountSketch.load(b"ckpt.npz")


# ------------------------------------------------------------------ item 1: atomicity
def _failing_savez(file, *args, **kwds):
    """Write the start of an archive, then fail, as a full disk would."""
    handle = open(file, "wb") if isinstance(file, (str, os.PathLike)) else file
    handle.write(b"PK\x03\x04 half an archive")
    handle.flush()
    raise OSError("disk full")


@pytest.mark.parametrize("kind", SKETCHES)
def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch, kind):
    old = SKETCHES[kind]()
    path = old.save(tmp_path / "ckpt.npz")
    monkeypatch.setattr(np, "savez", _failing_savez)
    with pytest.raises(OSError, match="disk full"):
        SKETCHES[kind]().zero().save(path)
    monkeypatch.undo()
    same(type(old).load(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]  # no temporary left


def test_process_killed_while_saving_keeps_the_previous_file(tmp_path):
    """SIGKILL half-way through writing: no cleanup runs, the old checkpoint survives."""
    path = tmp_path / "ckpt.npz"
    old = count_sketch(seed=1)
    old.save(path)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np
        from pysketch import CountSketch
        real = np.savez

        def savez(file, **fields):
            real(file, **fields)
            # Only half of the new archive reaches the disk before the process dies.
            if isinstance(file, (str, os.PathLike)):
                name = str(file) if str(file).endswith(".npz") else str(file) + ".npz"
                os.truncate(name, os.path.getsize(name) // 2)
            else:
                file.flush()
                file.truncate(file.tell() // 2)
            os.kill(os.getpid(), signal.SIGKILL)

        np.savez = savez
        CountSketch(300, 5, 32, seed=1).save({str(path)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert result.returncode == -9, result.stderr.decode()
    same(CountSketch.load(path), old)


@pytest.mark.parametrize("kind", SKETCHES)
def test_save_refuses_a_state_load_would_refuse(tmp_path, kind):
    sketch = SKETCHES[kind]()
    path = sketch.save(tmp_path / "ckpt")
    sketch.table[0, 0] = np.nan
    with pytest.raises(ValueError, match="cannot save .* table holds 1 NaN or Inf"):
        sketch.save(path)
    same(type(sketch).load(path), SKETCHES[kind]())


# ------------------------------------------------------------------ item 3: contents
def test_count_sketch_table_must_be_finite(tmp_path):
    path = count_sketch().save(tmp_path / "s")
    table = fields_of(path)["table"].copy()
    table[1, 2] = np.inf
    rewrite(path, table=table)
    with pytest.raises(ValueError, match=r"table holds 1 NaN or Inf"):
        CountSketch.load(path)


@pytest.mark.parametrize("conservative", [False, True])
@pytest.mark.parametrize("total", [0.0, 3.0, 100.0])
def test_count_min_total_weight_must_match_the_table(tmp_path, conservative, total):
    sketch = count_min(conservative)
    path = sketch.save(tmp_path / "cm")
    rewrite(path, total_weight=np.float64(total))
    if conservative and total > sketch.total_weight:  # rows sum to at most the total: fine
        assert CountMinSketch.load(path).total_weight == total
        return
    with pytest.raises(ValueError, match="total_weight .* inconsistent with the table"):
        CountMinSketch.load(path)


def test_row_sums_tolerate_float32_rounding(tmp_path):
    rng = np.random.default_rng(0)
    sketch = CountMinSketch(4, 64, dtype=np.float32).update(
        rng.integers(0, 10**6, 200_000), rng.exponential(1.0, 200_000)
    )
    same(CountMinSketch.load(sketch.save(tmp_path / "cm")), sketch)


BAD_FIELDS = [
    ({"version": 1.9}, "field 'version'"),
    ({"version": "1"}, "field 'version'"),
    ({"version": [1]}, "field 'version'"),
    ({"version": 2}, "field 'version' is 2"),
    ({"format": 7}, "field 'format'"),
    ({"rows": [5, 5]}, "field 'rows'"),
    ({"rows": 5.0}, "field 'rows'"),
    ({"d": "300"}, "d must be a positive integer"),
    ({"dtype": "int32"}, "dtype must be float32 or float64"),
    ({"dtype": 4}, "dtype must be float32 or float64"),
    ({"seed": -3}, "seed must be an integer in"),
    ({"table": np.zeros(160, np.float32)}, "table must have shape"),
    ({"table": np.zeros((5, 32), np.int32)}, "table must have shape"),
    ({"table": None}, r"missing \['table'\]"),
]


@pytest.mark.parametrize(("change", "message"), BAD_FIELDS)
def test_malformed_fields_name_the_field(tmp_path, change, message):
    path = rewrite(count_sketch().save(tmp_path / "s"), **change)
    with pytest.raises(ValueError, match=message):
        CountSketch.load(path)


def test_count_min_flag_must_be_a_bool(tmp_path):
    path = rewrite(count_min().save(tmp_path / "cm"), conservative=0)
    with pytest.raises(ValueError, match="conservative"):
        CountMinSketch.load(path)


@pytest.mark.parametrize("contents", [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 40])
def test_files_that_are_not_archives(tmp_path, contents):
    path = tmp_path / "x.npz"
    path.write_bytes(contents)
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        CountSketch.load(path)
    np.save(tmp_path / "array.npy", np.zeros(3))
    os.replace(tmp_path / "array.npy", path)
    with pytest.raises(ValueError, match="not an .npz archive"):
        CountSketch.load(path)


def _open_files():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@settings(max_examples=40)
@given(cut=st.floats(0.0, 0.999), kind=st.sampled_from(sorted(SKETCHES)))
def test_truncated_files_give_one_value_error_and_no_leak(tmp_path_factory, cut, kind):
    sketch = SKETCHES[kind]()
    path = sketch.save(tmp_path_factory.mktemp("t") / "ckpt")
    data = path.read_bytes()
    path.write_bytes(data[: int(cut * len(data))])
    before = _open_files()
    with pytest.raises(ValueError, match=str(path)) as info:
        type(sketch).load(path)
    # The traceback (alive in ``info``) would keep a leaked handle open.
    assert info.value.__traceback__ is not None
    assert _open_files() == before


def test_files_of_the_other_byte_order_load(tmp_path):
    sketch = count_min()
    path = sketch.save(tmp_path / "cm")
    swapped = {
        name: value.astype(value.dtype.newbyteorder(">")) if value.dtype.kind in "iuf" else value
        for name, value in fields_of(path).items()
    }
    np.savez(path, **swapped)
    assert fields_of(path)["table"].dtype.byteorder == ">"
    same(CountMinSketch.load(path), sketch)


@given(
    field=st.sampled_from(["format", "version", "table", "d", "rows", "cols", "seed", "hash"]),
    value=st.one_of(
        st.none(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        st.text(max_size=5),
        st.lists(st.integers(-5, 5), max_size=3),
        st.booleans(),
    ),
)
def test_any_tampered_field_gives_a_value_error(tmp_path_factory, field, value):
    path = count_sketch().save(tmp_path_factory.mktemp("f") / "s")
    rewrite(path, **{field: value})
    try:
        loaded = CountSketch.load(path)
    except ValueError:
        return
    # Only a change to another valid value may load, and then it is what was read.
    if field in loaded.params:
        assert loaded.params[field] == value
    else:
        assert (field, value) in {("version", 1), ("format", "pysketch.CountSketch")}


# ------------------------------------------------- issue 20 item 7: compressed-data bombs
BOMB_BYTES = 64 * 2**20  # what the crafted member inflates to; its archive is about 64 kB


def bomb(good: bytes, field: str, descr: str, shape: tuple) -> bytes:
    """``good`` with member ``field`` replaced by a deflated header + zeros of ``shape``."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(good)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for name in src.namelist():
            if name != f"{field}.npy":
                dst.writestr(name, src.read(name))
        size = np.dtype(descr).itemsize * int(np.prod(shape))
        with dst.open(f"{field}.npy", "w", force_zip64=True) as member:
            header = {"descr": descr, "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(member, header)
            chunk = bytes(2**20)
            for _ in range(size // len(chunk)):
                member.write(chunk)
    return out.getvalue()


BOMBS = [
    ("CountSketch", "table", "<f4", (BOMB_BYTES // 4,)),
    ("CountSketch", "hash", f"<U{BOMB_BYTES // 4}", ()),
    ("CountMinSketch", "total_weight", "<f8", (BOMB_BYTES // 8,)),
]


@pytest.mark.parametrize(("kind", "field", "descr", "shape"), BOMBS)
def test_a_compressed_bomb_is_refused_from_its_header(tmp_path, kind, field, descr, shape):
    """A 64 kB archive whose member inflates to 64 MiB: refused before its data are read."""
    data = bomb(SKETCHES[kind]().serialize(), field, descr, shape)
    assert len(data) < BOMB_BYTES // 500
    path = tmp_path / "bomb.npz"
    path.write_bytes(data)
    cls = type(SKETCHES[kind]())
    for read in (lambda: cls.deserialize(data), lambda: cls.load(path)):
        tracemalloc.start()  # NumPy reports its array buffers to tracemalloc too
        try:
            with pytest.raises(ValueError, match=field):
                read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 2**20, f"{peak / 2**20:.1f} MiB allocated while refusing the archive"


def test_a_member_larger_than_its_header_says_is_refused(tmp_path):
    """The zip directory's size of a member must be what its header implies."""
    good = count_sketch().serialize()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name) + (b"\0" * 64 if name == "table.npy" else b""))
    with pytest.raises(ValueError, match="field 'table' is .* bytes in the archive"):
        CountSketch.deserialize(out.getvalue())


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = count_sketch().save(tmp_path / "s")
    rewrite_path = tmp_path / "o.npz"
    fields = fields_of(path)
    fields["table"] = np.array([None, 1], dtype=object)
    np.savez(rewrite_path, **fields)
    with pytest.raises(ValueError, match="field 'table' holds Python objects"):
        CountSketch.load(rewrite_path)
