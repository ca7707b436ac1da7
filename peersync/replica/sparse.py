"""Writing and copying files so that holes stay holes: a sparse file (a VM image, a preallocated
database) costs on a replica what it costs where it was made, not its full length.

Where the file system cannot tell holes (no SEEK_DATA) a copy is a plain one; the bytes are the
same either way — only the allocation differs.
"""

from __future__ import annotations

import errno
import os

BLOCK = 64 << 10  # zero runs shorter than this are written: a hole smaller than a few pages saves nothing
_ZEROS = bytes(BLOCK)
_COPY = 8 << 20  # bytes per copy_file_range / read-write step: bounded memory whatever the file


def write_at(fd: int, offset: int, data: bytes) -> None:
    """Write `data` at `offset`, seeking over whole zero blocks instead of writing them; the
    file ends at least at offset + len(data) (a trailing hole is made by extending it)."""
    view = memoryview(data)
    start = 0
    while start < len(view):
        # Blocks aligned to the file's offsets, so a hole covers whole file-system blocks.
        end = min(len(view), start + BLOCK - (offset + start) % BLOCK)
        block = view[start:end]
        if block != _ZEROS[: len(block)]:
            at = offset + start
            while block:
                written = os.pwrite(fd, block, at)
                block, at = block[written:], at + written
        start = end
    if os.fstat(fd).st_size < offset + len(data):
        os.ftruncate(fd, offset + len(data))


def extend(fd: int, size: int) -> None:
    """Make the file `size` bytes long, the new bytes a hole (zeros, not allocated)."""
    if os.fstat(fd).st_size < size:
        os.ftruncate(fd, size)


def data_extents(fd: int, start: int, end: int):
    """(offset, length) of the runs of `fd` between start and end that may hold data; the rest
    are holes.  The whole range where the system cannot tell."""
    offset = start
    while offset < end:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole from here to the end of the file
                return
            if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no hole support: all of it is data
                yield offset, end - offset
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole - data
        offset = hole


def copy(src: int, dst: int, length: int) -> None:
    """Copy the first `length` bytes of `src` to `dst` (empty), holes as holes: only the data
    extents are copied (in the kernel where it can), and `dst` is then extended to `length`."""
    for offset, size in data_extents(src, 0, length):
        _copy_range(src, dst, offset, size)
    extend(dst, length)


def _copy_range(src: int, dst: int, offset: int, size: int) -> None:
    end = offset + size
    while offset < end:
        try:
            done = os.copy_file_range(src, dst, min(_COPY, end - offset), offset, offset)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                raise
            done = 0
            chunk = os.pread(src, min(_COPY, end - offset), offset)
            if chunk:
                write_at(dst, offset, chunk)
                done = len(chunk)
        if not done:  # the source ended early (it shrank): the caller's size check refuses it
            return
        offset += done
