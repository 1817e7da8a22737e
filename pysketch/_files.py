"""Files: atomic writes, and ``.npz`` archives read without trusting them.

:func:`write_atomically` writes through a temporary file that is renamed over
the target, so a crash leaves the old file or the new one, never a mix.

:class:`NpzReader` reads an ``.npz`` archive (a zip of ``.npy`` members) member
by member. The caller checks a member's ``.npy`` header (shape and dtype) with
:meth:`NpzReader.header` before :meth:`NpzReader.read` touches its data, and the
reader refuses a member whose size in the zip directory is not exactly what its
header implies, so nothing is ever inflated beyond the size the caller accepted:
a small archive that would inflate to gigabytes (a compressed-data bomb) is
refused after reading a few hundred bytes. Every failure is one ``ValueError``
that names the source and the member.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

_NPY_MAGIC = b"\x93NUMPY"
# Deflate cannot compress better than about 1032:1; a member claiming more lies.
_MAX_DEFLATE_RATIO = 1032


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(file)``: a temporary file, fsync'd, then renamed.

    The temporary file ``.<name>.<pid>.<random>.tmp`` lives in the target's
    directory (so the rename is atomic) and gets the mode a plain ``open``
    would (``0o666`` less the umask). On any error it is removed and the old
    file is left as it was; only a crash can leave it behind. An ``OSError``
    that names no file (a full disk, from ``write``) is raised again naming
    ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination.
    write : callable
        Called with a binary file object open for writing.
    """
    target = Path(path)
    temporary = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    handle = os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError) and exc.filename is None:  # write() names no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class NpzReader:
    """An ``.npz`` archive opened for checked reading; use it as a context manager.

    Parameters
    ----------
    handle : binary file object
        Seekable, open for reading (the caller closes it).
    source : object
        How messages name the archive (its path, say).

    Raises
    ------
    ValueError
        The data are not a readable zip archive, or hold a single ``.npy``.
    """

    def __init__(self, handle: IO[bytes], source: Any) -> None:
        self.source = source
        start = handle.read(len(_NPY_MAGIC))
        handle.seek(0)
        if start == _NPY_MAGIC:
            raise ValueError(f"{source} is not an .npz archive (it holds a single array)")
        try:
            self._zip = zipfile.ZipFile(handle)
        except Exception as exc:  # BadZipFile, EOFError, OSError, ValueError: a damaged file
            raise ValueError(f"{source} is not a readable .npz archive ({exc})") from exc
        self._members = {
            info.filename[: -len(".npy")]: info
            for info in self._zip.infolist()
            if info.filename.endswith(".npy")
        }

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the zip (not the handle given to the constructor)."""
        self._zip.close()

    @property
    def names(self) -> frozenset[str]:
        """The names of the archive's arrays (members ``<name>.npy``)."""
        return frozenset(self._members)

    def header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """The shape and dtype of array ``name``, read from its header alone.

        Also checks that the member's size in the zip directory is exactly the
        header plus ``prod(shape) * itemsize`` bytes of data, and that the
        array holds no Python objects (which would need pickle).
        """
        shape, dtype, _, _ = self._header(name)
        return shape, dtype

    def read(self, name: str) -> np.ndarray:
        """Array ``name``: its header checked again, then exactly its data read."""
        shape, dtype, fortran, offset = self._header(name)
        try:
            with self._zip.open(self._members[name]) as member:
                member.read(offset)
                data = _read_exactly(member, math.prod(shape) * dtype.itemsize)
        except Exception as exc:  # zlib.error, BadZipFile (CRC), EOFError: a damaged member
            raise ValueError(f"{self.source}: field {name!r} cannot be read ({exc})") from exc
        array = np.frombuffer(data, dtype=dtype)
        if fortran:
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)

    def _header(self, name: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
        info = self._members.get(name)
        if info is None:
            raise ValueError(f"{self.source}: field {name!r} is missing")
        try:
            with self._zip.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f".npy format version {version} is not supported")
                offset = member.tell()
        except Exception as exc:  # a damaged member or header
            raise ValueError(
                f"{self.source}: field {name!r} has no readable .npy header ({exc})"
            ) from exc
        if dtype.hasobject:
            raise ValueError(f"{self.source}: field {name!r} holds Python objects (pickle)")
        expected = offset + math.prod(shape) * dtype.itemsize
        if info.file_size != expected:
            raise ValueError(
                f"{self.source}: field {name!r} is {info.file_size} bytes in the archive, its "
                f"header (shape {shape}, dtype {dtype}) implies {expected}"
            )
        if (
            info.compress_type != zipfile.ZIP_STORED
            and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024
        ):
            raise ValueError(
                f"{self.source}: field {name!r} claims {info.file_size} bytes from "
                f"{info.compress_size} compressed ones, more than deflate can give"
            )
        return shape, dtype, fortran, offset


def _read_exactly(member: IO[bytes], size: int) -> bytearray:
    """``size`` bytes of ``member`` into one preallocated buffer (no second copy)."""
    data = bytearray(size)
    view, done = memoryview(data), 0
    while done < size:
        got = member.readinto(view[done:])
        if not got:
            raise EOFError(f"the data end after {done} of {size} bytes")
        done += got
    return data
