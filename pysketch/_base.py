"""What Count Sketch and Count-Min share: a seeded table on one device.

Parameters, compatibility checks, in-place table arithmetic on either device,
copies, and the ``.npz`` file layout (no pickle) live here once.
"""

from __future__ import annotations

import io
import os
import secrets
import zipfile
from typing import Any, ClassVar

import numpy as np

from pysketch import _arrays, _cuda, _frameworks, hashing
from pysketch._arrays import CPU
from pysketch.kernels import elementwise, reductions

FORMAT_VERSION = 1


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
        self._family = family
        self._keys = host_keys if device == CPU else _cuda.to_device(host_keys)
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
    def _uses_kernels(self) -> bool:
        """Whether the table lacks array operators (a Numba device array)."""
        return self._device != CPU and hasattr(self._table, "copy_to_host")

    def _axpy(self, alpha: float, other: TableSketch) -> None:
        _frameworks.adopt(self, other)
        if not self._uses_kernels():
            self._table += self._table.dtype.type(alpha) * other._table
        else:
            flat = self._table.reshape(self._table.size)
            _cuda.launch(elementwise.cuda_axpy, flat.size)(
                flat, alpha, other._table.reshape(flat.size)
            )

    def _scale(self, alpha: float) -> None:
        if not self._uses_kernels():
            self._table *= self._table.dtype.type(alpha)
        else:
            flat = self._table.reshape(self._table.size)
            _cuda.launch(elementwise.cuda_scale, flat.size)(flat, alpha)

    def zero(self):
        """Reset every cell to 0, in place. Returns ``self``."""
        if not self._uses_kernels():
            self._table[...] = 0
        else:
            flat = self._table.reshape(self._table.size)
            _cuda.launch(elementwise.cuda_fill, flat.size)(flat, 0)
        return self

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
        return _cuda.to_host(self._table)

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
    def save(self, path: str | os.PathLike) -> None:
        """Write the sketch to ``path`` as an ``.npz`` archive (no pickle).

        The archive holds ``format`` (the class name), ``version``, one 0-d
        array per parameter and ``table``; :meth:`load` validates all of them.
        """
        fields = {name: np.asarray(value) for name, value in self.params.items()}
        if "dtype" in fields:
            fields["dtype"] = np.asarray(str(self.params["dtype"]))
        np.savez(
            path,
            format=np.asarray(f"pysketch.{type(self).__name__}"),
            version=np.asarray(FORMAT_VERSION),
            table=self.table_to_host(),
            **fields,
            **self._extra_state(),
        )

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = CPU):
        """Read a sketch written by :meth:`save`, onto ``device``.

        Raises ``ValueError`` naming the field when the file is not a pysketch
        archive of this class, has another version, or its table does not match
        its parameters.
        """
        expected_format = f"pysketch.{cls.__name__}"
        with np.load(path, allow_pickle=False) as archive:
            expected = {"format", "version", "table", *cls._PARAMS, *cls._EXTRA_STATE}
            missing = expected - set(archive.files)
            if missing:
                raise ValueError(
                    f"{path} is not a {expected_format} archive: missing {sorted(missing)}"
                )
            if str(archive["format"]) != expected_format:
                raise ValueError(
                    f"{path} has format {str(archive['format'])!r}, expected {expected_format!r}"
                )
            if int(archive["version"]) != FORMAT_VERSION:
                raise ValueError(
                    f"{path} has format version {int(archive['version'])}, "
                    f"this pysketch reads version {FORMAT_VERSION}"
                )
            params = {name: archive[name].item() for name in cls._PARAMS}
            table = archive["table"]
            extra = {name: archive[name] for name in cls._EXTRA_STATE}
        sketch = cls._from_table(params, table, device)
        sketch._restore_extra_state(extra, source=str(path))
        return sketch

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
        self.save(buffer)
        return buffer.getvalue()

    @classmethod
    def deserialize(cls, data: bytes, *, device: str = CPU):
        """A sketch from the bytes of :meth:`serialize`, onto ``device``.

        Raises ``TypeError`` unless ``data`` is bytes-like, ``ValueError`` when
        it is not a serialized sketch of this class.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        try:
            return cls.load(io.BytesIO(bytes(data)), device=device)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"data is not a serialized pysketch.{cls.__name__}: {exc}") from exc

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
