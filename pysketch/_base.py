"""What Count Sketch and Count-Min share: a seeded table on one device.

Parameters, compatibility checks, in-place table arithmetic on either device,
copies, and the ``.npz`` file layout (no pickle) live here once.
"""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pysketch import _arrays, _cuda, _dense, _files, _frameworks, hashing
from pysketch._arrays import CPU
from pysketch.kernels import reductions

FORMAT_VERSION = 1
# The largest scalar field an archive may hold (strings included): a header asking for
# more is refused before its data are read.
_MAX_SCALAR_BYTES = 1024
_NO_INDICES = np.empty(0, dtype=np.int64)


class TableSketch:
    """Base class: a ``rows x cols`` table, its hash keys and its parameters.

    Subclasses name their parameters in ``_PARAMS`` (all of them must match for
    two sketches to be combined) and set ``self._table`` and ``self._device``.
    Additive host-side state beside the table, which collectives sum with it,
    goes through :meth:`_summed_state` and :meth:`_set_summed_state`.
    """

    _PARAMS: ClassVar[tuple[str, ...]] = ()
    # State beside the table that copies and archives carry (Count-Min's total weight).
    _EXTRA_STATE: ClassVar[tuple[str, ...]] = ()
    _table: Any
    _device: str

    def _init_hashed_table(
        self, rows: int, cols: int, seed: int, hash: str, dtype: Any, device: str
    ) -> None:
        """Validate the shared parameters, derive the hash keys, allocate a zero table.

        Everything is checked before any attribute is set.
        """
        if seed is None:  # a fresh seed, recorded in .seed (share it with the other workers)
            seed = secrets.randbits(64)
        rows = _arrays.check_positive_int("rows", rows, maximum=reductions.MAX_ROWS)
        cols = _arrays.check_positive_int("cols", cols, maximum=hashing.MAX_COLS)
        dtype = _arrays.check_float_dtype("dtype", dtype)
        family = hashing.family_code(hash)
        host_keys = hashing.hash_keys(seed, rows, hash)
        _arrays.check_device(device)
        self.rows, self.cols, self.dtype, self.hash, self.seed = rows, cols, dtype, hash, int(seed)
        # The family as this device's kernels take it, like the keys: the CPU kernels take
        # None for the mix family (hashing.cpu_family), the CUDA kernels the code.
        self._family = hashing.cpu_family(family) if device == CPU else family
        self._keys = host_keys if device == CPU else _cuda.to_device(host_keys)
        # The unused index argument of dense kernels, copied to the device once, not per call.
        self._no_indices = _NO_INDICES if device == CPU else _cuda.to_device(_NO_INDICES)
        self._set_table(np.zeros((rows, cols), dtype=dtype), device)

    # ------------------------------------------------------------ properties
    @property
    def table(self):
        """The ``(rows, cols)`` table itself, on the sketch's device (not a copy).

        Collectives reduce it in place; writing to it changes the sketch.
        """
        return self._table

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda"``."""
        return self._device

    @property
    def params(self) -> dict[str, Any]:
        """The parameters that two sketches must share to be combined."""
        return {name: getattr(self, name) for name in self._PARAMS}

    @property
    def nbytes(self) -> int:
        """Bytes of the table: what a collective sends."""
        return int(self._table.size) * np.dtype(self._table.dtype).itemsize

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args}, device={self._device!r})"

    # ---------------------------------------------------------- compatibility
    def check_compatible(self, other: Any, name: str = "other") -> None:
        """Raise ``ValueError`` unless ``other`` has the same type, parameters and device."""
        if type(other) is not type(self):
            raise TypeError(f"{name} must be a {type(self).__name__}, got {type(other).__name__}")
        diffs = [
            f"{key}: {mine!r} != {theirs!r}"
            for key, mine in self.params.items()
            if (theirs := other.params[key]) != mine
        ]
        if other.device != self.device:
            diffs.append(f"device: {self.device!r} != {other.device!r}")
        if diffs:
            raise ValueError(
                f"{name} is not compatible with this {type(self).__name__} "
                f"({'; '.join(diffs)}): sketches with different hashes or shapes cannot be combined"
            )

    # --------------------------------------------------------- table algebra
    def _stream(self) -> Any:
        """The caller's stream where no input names one: the current stream of the table's
        producer (CuPy's current stream), as the queries with an input use the input's."""
        return 0 if self._device == CPU else _cuda.stream_for(self._table)

    def _axpy(self, alpha: float, other: TableSketch) -> None:
        _frameworks.adopt(self, other)
        _dense.axpy(_dense.flat(self._table), alpha, _dense.flat(other._table), self._stream())

    def _scale(self, alpha: float) -> None:
        _dense.scale(_dense.flat(self._table), alpha, self._stream())

    def zero(self):
        """Reset every cell to 0, in place. Returns ``self``."""
        _dense.fill(_dense.flat(self._table), 0, self._stream())
        return self

    def _sharing_keys(self, table: Any):
        """A sketch with these parameters and hash keys over ``table`` (kept, not copied).

        Nothing is allocated or uploaded: the steps of :mod:`pysketch.compress`
        view their preallocated buffers as sketches this way.
        """
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._table = table
        return view

    def _reseed(self, seed: int, stream: Any = 0) -> None:
        """New hashes from ``seed``, written into the existing key array (no allocation).

        Sketches made by :meth:`_sharing_keys` share that array, so they follow.
        """
        seed = _arrays.check_seed(seed)
        host_keys = hashing.hash_keys(seed, self.rows, self.hash)
        if self._device == CPU:
            self._keys[...] = host_keys
        else:
            _cuda.upload(host_keys, self._keys, stream)
        self.seed = seed

    def copy(self):
        """An independent sketch with the same parameters and a copy of the table."""
        return self.to(self._device)

    def to(self, device: str):
        """A copy of this sketch on ``device`` (``"cpu"`` or ``"cuda"``)."""
        _arrays.check_device(device)
        sketch = self._from_table(self.params, self.table_to_host(), device)
        sketch._restore_extra_state(self._extra_state(), source="the copy")
        _frameworks.adopt(sketch, self)
        return sketch

    def _extra_state(self) -> dict[str, np.ndarray]:
        """The ``_EXTRA_STATE`` fields as host arrays; none by default."""
        return {}

    def _restore_extra_state(self, fields: dict[str, np.ndarray], source: str) -> None:
        """Validate and adopt what :meth:`_extra_state` produced; raise naming the field."""

    # ------------------------------------------- state summed with the table
    def _summed_state(self) -> float | None:
        """Host-side scalar state that is summed over ranks along with the table.

        Sketches are linear, so summing the tables of the ranks' sketches gives
        the sketch of the summed inputs; state kept beside the table that is
        also additive (Count-Min's total weight) must be summed with it.
        :func:`pysketch.distributed.allreduce_sketch` reduces the table, then
        sums this value over the ranks and hands the sum to
        :meth:`_set_summed_state` of the sketch that receives the result.

        Returns a Python float already on the host, read without touching the
        table (which may live on the device), or ``None`` when there is no
        such state (the default, e.g. Count Sketch): then nothing beyond the
        table is reduced and :meth:`_set_summed_state` is not called.
        """
        return None

    def _set_summed_state(self, value: float) -> None:
        """Adopt ``value``, the sum over ranks of :meth:`_summed_state`.

        Called after the table was reduced, only when :meth:`_summed_state`
        returned a number; must not read or copy the table. Subclasses that
        override :meth:`_summed_state` override this too.
        """
        raise NotImplementedError(f"{type(self).__name__} has no state summed beside its table")

    def table_to_host(self) -> np.ndarray:
        """A host (NumPy) copy of the table."""
        if self._device == CPU:
            return self._table.copy()
        return _cuda.to_host(self._table, self._stream())

    def _set_table(self, host_table: np.ndarray, device: str) -> None:
        self._device = device
        if device == CPU:
            self._table = np.ascontiguousarray(host_table)
        else:
            self._table = _cuda.to_device(host_table)

    @classmethod
    def _from_table(cls, params: dict[str, Any], host_table: np.ndarray, device: str):
        sketch = cls(**params, device=device)
        expected = sketch._table.shape, np.dtype(sketch._table.dtype)
        if (host_table.shape, host_table.dtype) != expected:
            raise ValueError(
                f"table must have shape {expected[0]} and dtype {expected[1]}, "
                f"got {host_table.shape} and {host_table.dtype}"
            )
        sketch._set_table(host_table.copy(), device)
        return sketch

    # --------------------------------------------------------- serialisation
    def _check_state(self, source: str) -> None:
        """Raise ``ValueError`` naming the field unless :meth:`load` would accept this state.

        The table must be finite; subclasses add their own rules. :meth:`save`
        runs it too, so every file it writes loads again.
        """
        host = self._table if self._device == CPU else self.table_to_host()
        bad, _ = reductions.cpu_count_unfit(host.reshape(host.size), 1.0, np.inf)
        if bad:
            raise ValueError(f"{source}: table holds {bad} NaN or Inf value(s)")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the sketch to an ``.npz`` archive (no pickle), atomically.

        The archive holds ``format`` (the class name), ``version``, one 0-d
        array per parameter and ``table``; :meth:`load` validates all of them.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write. As with :func:`numpy.savez`, ``.npz`` is appended
            unless the name ends with it; :meth:`load` applies the same rule,
            so ``load(p)`` reads what ``save(p)`` wrote.

        Returns
        -------
        pathlib.Path
            The file written.

        Raises
        ------
        ValueError
            The state is one :meth:`load` would refuse (NaN or Inf in the
            table, say); nothing is written.

        Notes
        -----
        The archive is written to a temporary file in the same directory,
        flushed and ``fsync``-ed, then renamed over ``path`` (``os.replace``),
        and the directory is ``fsync``-ed: a crash at any point leaves either
        the previous file or the new one, never a truncated mix. A crash can
        leave the temporary file (``.<name>.<pid>.<random>.tmp``) behind.
        """
        target = _archive_path(path)
        fields = self._archive_fields()
        _files.write_atomically(target, lambda handle: np.savez(handle, **fields))
        return target

    def _archive_fields(self) -> dict[str, np.ndarray]:
        """What :meth:`save` and :meth:`serialize` write, after checking the state."""
        self._check_state(f"cannot save this {type(self).__name__}")
        fields = {name: np.asarray(value) for name, value in self.params.items()}
        if "dtype" in fields:
            fields["dtype"] = np.asarray(str(self.params["dtype"]))
        return {
            "format": np.asarray(f"pysketch.{type(self).__name__}"),
            "version": np.asarray(FORMAT_VERSION),
            "table": self.table_to_host(),
            **fields,
            **self._extra_state(),
        }

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = CPU):
        """Read a sketch written by :meth:`save`, onto ``device``.

        Parameters
        ----------
        path : str or os.PathLike
            The file, with ``.npz`` appended unless the name ends with it
            (as :meth:`save` does).
        device : {"cpu", "cuda"}, default "cpu"

        Raises
        ------
        FileNotFoundError
            No such file.
        ValueError
            One, naming the field, for anything else wrong with the file: not
            a readable ``.npz`` archive (truncated, say), another class or
            format version, a field of the wrong type or shape, parameters the
            constructor refuses, a table that does not match them or holds
            NaN or Inf, or state inconsistent with the table.
        """
        source = _archive_path(path)
        _arrays.check_device(device)
        with open(source, "rb") as handle:
            return cls._from_archive(handle, source, device)

    @classmethod
    def _from_archive(cls, handle: Any, source: Any, device: str):
        """The sketch that :meth:`_archive_fields` described; one ValueError naming a bad field.

        Every member's ``.npy`` header is checked before its data are read: the
        scalars first, then the table against the shape and dtype that the
        parameters give, so no archive makes this read more than that table.
        """
        with _files.NpzReader(handle, source) as archive:
            names = ("format", "version", "table", *cls._PARAMS, *cls._EXTRA_STATE)
            missing = sorted(set(names) - archive.names)
            if missing:
                raise ValueError(f"{source} is not a pysketch archive: missing {missing}")
            expected_format = f"pysketch.{cls.__name__}"
            found = _scalar(archive, "format", "U", source)
            if found != expected_format:
                raise ValueError(
                    f"{source}: field 'format' is {found!r}, expected {expected_format!r}"
                )
            version = _scalar(archive, "version", "iu", source)
            if version != FORMAT_VERSION:
                raise ValueError(
                    f"{source}: field 'version' is {version}, this pysketch reads version "
                    f"{FORMAT_VERSION}"
                )
            params = {name: _scalar(archive, name, "biuU", source) for name in cls._PARAMS}
            try:
                sketch = cls(**params, device=CPU)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{source}: {exc}") from exc
            shape, dtype = archive.header("table")
            expected = sketch._table.shape, np.dtype(sketch._table.dtype)
            if (shape, dtype.newbyteorder("=")) != expected:
                raise ValueError(
                    f"{source}: table must have shape {expected[0]} and dtype {expected[1]}, "
                    f"got {shape} and {dtype}"
                )
            # Native byte order whichever machine wrote it; the copy is also writable.
            sketch._set_table(archive.read("table").astype(expected[1]), CPU)
            extra = {name: _small_field(archive, name, source) for name in cls._EXTRA_STATE}
        sketch._restore_extra_state(extra, source=str(source))
        sketch._check_state(str(source))
        return sketch if device == CPU else sketch.to(device)

    # ------------------------------------------------ bytes, equality, sum()
    def serialize(self) -> bytes:
        """The sketch as bytes: the :meth:`save` archive, in memory.

        Examples
        --------
        >>> from pysketch import CountMinSketch
        >>> cms = CountMinSketch(rows=2, cols=8).update([1, 2])
        >>> CountMinSketch.deserialize(cms.serialize()) == cms
        True
        """
        buffer = io.BytesIO()
        np.savez(buffer, **self._archive_fields())
        return buffer.getvalue()

    @classmethod
    def deserialize(cls, data: bytes, *, device: str = CPU):
        """A sketch from the bytes of :meth:`serialize`, onto ``device``.

        Raises ``TypeError`` unless ``data`` is bytes-like, ``ValueError`` when
        it is not a serialized sketch of this class.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        _arrays.check_device(device)
        source = f"data (serialized pysketch.{cls.__name__})"
        return cls._from_archive(io.BytesIO(data), source, device)

    def __eq__(self, other: object) -> bool:
        """Same type, parameters, device, table and state beside the table."""
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, TableSketch)
        if self.params != other.params or self.device != other.device:
            return False
        mine, theirs = self._extra_state(), other._extra_state()
        if any(not np.array_equal(mine[key], theirs[key]) for key in mine):
            return False
        return bool(np.array_equal(self.table_to_host(), other.table_to_host()))

    __hash__ = None  # mutable

    def __radd__(self, other: Any):
        """``0 + sketch`` is a copy of the sketch, so ``sum(sketches)`` works."""
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool) and other == 0:
            return self.copy()
        return NotImplemented


def _archive_path(path: Any) -> Path:
    """The file that ``save(path)`` writes: ``.npz`` appended unless there, as by ``np.savez``."""
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    target = Path(path)
    return target if target.name.endswith(".npz") else target.with_name(target.name + ".npz")


def _small_field(archive: _files.NpzReader, name: str, source: Any) -> np.ndarray:
    """Field ``name``, a 0-d array of at most ``_MAX_SCALAR_BYTES``, its header checked first."""
    shape, dtype = archive.header(name)
    if shape != () or dtype.itemsize > _MAX_SCALAR_BYTES:
        raise ValueError(
            f"{source}: field {name!r} must be a scalar (at most {_MAX_SCALAR_BYTES} bytes), "
            f"got {dtype} of shape {shape}"
        )
    return archive.read(name)


def _scalar(archive: _files.NpzReader, name: str, kinds: str, source: Any) -> Any:
    """The Python value of 0-d field ``name`` whose dtype kind is one of ``kinds``."""
    shape, dtype = archive.header(name)
    if shape != () or dtype.kind not in kinds:
        raise ValueError(
            f"{source}: field {name!r} must be a scalar of kind {kinds!r}, "
            f"got {dtype} of shape {shape}"
        )
    return _small_field(archive, name, source).item()
