"""Streaming decompression by file suffix (.gz, .zst/.zstd) with bounded memory and truncation detection.

`open_binary` gives a forward-only binary stream. A compressed file cut short raises `EOFError` at the point
where its data ends, whatever the codec, so readers can keep what came before and report the cut.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

COMPRESSIONS: dict[str, str] = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
CHUNK = 1 << 16  # compressed bytes fed per step: bounds what one step can inflate to
_CHUNK = CHUNK  # module-internal alias


class _Stream(io.RawIOBase):
    """A forward-only raw stream over decompressed chunks, for `io.BufferedReader` and fastwarc to read from."""

    def __init__(self, fh: BinaryIO, chunks: Iterator[bytes]) -> None:
        self._fh, self._chunks = fh, chunks
        self._pending, self._pos, self._offset = memoryview(b""), 0, 0

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # fastwarc asks where it is (a no-op seek) before it reads; moving is not supported
        if (whence, offset) in ((io.SEEK_CUR, 0), (io.SEEK_SET, self._offset)):
            return self._offset
        raise io.UnsupportedOperation("a compressed stream can only be read forward")

    def tell(self) -> int:
        return self._offset

    def readinto(self, buf: Any) -> int:
        if self._pos >= len(self._pending):
            self._pending, self._pos = memoryview(next(self._chunks, b"")), 0
        out = memoryview(buf).cast("B")
        n = min(len(out), len(self._pending) - self._pos)
        out[:n] = self._pending[self._pos : self._pos + n]
        self._pos += n
        self._offset += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _gzip_chunks(fh: BinaryIO) -> Iterator[bytes]:
    """Inflates gzip members one after another (the standard library's reader), `_CHUNK` bytes at a time; a file
    cut short raises its EOFError after the data before the cut."""
    reader = gzip.GzipFile(fileobj=fh, mode="rb")
    try:  # read1: one inflate step per call, so the data before a cut is handed out before the EOFError
        while out := reader.read1(_CHUNK):
            yield out
    except zlib.error as exc:  # callers handle one kind of error for any unreadable file (BadGzipFile is one)
        raise OSError(f"corrupt gzip data: {exc}") from exc


def _zstd_walk() -> Generator[tuple[int, bool], bytes | None, None]:
    """Follows zstd framing (RFC 8878) without decoding: yields (n, between_frames); n > 0 asks for the next n
    bytes, n < 0 skips -n bytes. Input may end only where between_frames is True."""
    while True:
        magic = int.from_bytes((yield 4, True) or b"", "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F:  # skippable frame: a size, then that many bytes
            yield -int.from_bytes((yield 4, False) or b"", "little"), False
            continue
        desc = ((yield 1, False) or b"\0")[0]  # window, dictionary id and content size fields follow
        single = desc >> 5 & 1
        yield -((1 - single) + (0, 1, 2, 4)[desc & 3] + (single, 2, 4, 8)[desc >> 6]), False
        last = 0
        while not last:
            header = int.from_bytes((yield 3, False) or b"", "little")
            last = header & 1
            yield -(1 if header >> 1 & 3 == 1 else header >> 3), False  # an RLE block holds one byte
        if desc & 4:
            yield -4, False  # content checksum


class _ZstdTee:
    """Hands compressed bytes to zstandard's bounded reader while `_zstd_walk` tracks where frames end.

    zstandard's stream_reader returns short data on a truncated file without a word, and its decompressobj has no
    output bound; the walk is what tells a cut file from a whole one.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self._fh, self._walk, self._head = fh, _zstd_walk(), b""
        self._want, self._between = next(self._walk)

    @property
    def complete(self) -> bool:
        return self._between and not self._head

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        view = memoryview(data)
        while view:
            if self._want < 0:
                n = min(-self._want, len(view))
                self._want += n
            else:
                n = self._want - len(self._head)
                self._head += view[:n]
            view = view[n:]
            while self._want == 0 or 0 < self._want == len(self._head):
                sent, self._head = (self._head if self._want else None), b""
                self._want, self._between = self._walk.send(sent)
        return data


def _zstd_chunks(fh: BinaryIO) -> Iterator[bytes]:
    import zstandard

    tee = _ZstdTee(fh)
    reader = zstandard.ZstdDecompressor().stream_reader(tee, read_across_frames=True, closefd=False)
    try:
        while out := reader.read(_CHUNK):
            yield out
    except zstandard.ZstdError as exc:  # callers handle one kind of error for any unreadable file
        raise OSError(f"corrupt zstd data: {exc}") from exc
    if not tee.complete:
        raise EOFError("zstd stream ends inside a frame")


def open_binary(path: Path) -> BinaryIO:
    """Opens `path` for buffered binary reading, decompressing `.gz`/`.zst`/`.zstd` by suffix.

    A compressed file cut short raises EOFError once everything before the cut has been read; corrupt compressed
    data raises OSError.
    """
    compression = COMPRESSIONS.get(path.suffix.lower())
    fh = open(path, "rb")  # the caller closes it (through the wrapper)
    if compression is None:
        return fh
    chunks = _gzip_chunks(fh) if compression == "gzip" else _zstd_chunks(fh)
    return io.BufferedReader(_Stream(fh, chunks), buffer_size=_CHUNK)  # type: ignore[return-value]
