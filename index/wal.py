"""The write-ahead log of a collection.

Each upsert or delete is one record, appended and fsynced before the call returns: a returned call is an
acknowledged write. A record is ``b"TWAL" | uint32 length | uint32 crc32 | payload`` where the payload is an
Arrow IPC stream holding one record batch; the batch's schema metadata says the operation. Reading stops at
the first record that is torn or fails its checksum (a write cut by a crash, never acknowledged); opening a
log for writing cuts that tail so later records follow the last good one.

Arrow IPC is the payload format (no hand-written serialisation of vectors or payloads); the framing with a
checksum is written here because Arrow's stream format has none and cannot tell a torn tail from a good one.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

MAGIC = b"TWAL"
HEADER = struct.Struct("<4sII")


def encode_record(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    payload = sink.getvalue().to_pybytes()
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def read_records(path: Path, start: int = 0, limit: int | None = None) -> tuple[list[pa.RecordBatch], int]:
    """The good records of a log from byte offset ``start`` (a record boundary), at most ``limit`` of them, and
    the byte offset where they end."""
    records, end = [], start
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:  # none yet, or a commit removed it (a read-only copy reading behind its writer)
        return records, end
    end = 0
    while end + HEADER.size <= len(data) and (limit is None or len(records) < limit):
        magic, length, crc = HEADER.unpack_from(data, end)
        body = end + HEADER.size
        payload = data[body : body + length]
        if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            break
        records.append(_decode(payload))
        end = body + length
    return records, start + end


def _decode(payload: bytes) -> pa.RecordBatch:
    with pa.ipc.open_stream(payload) as reader:
        return reader.read_next_batch()


class WriteAheadLog:
    """An append-only log file; ``append`` returns once the record is on disk."""

    def __init__(self, path: Path, good_end: int | None = None):
        self.path = path
        if good_end is None:
            _, good_end = read_records(path)
        self._file = open(path, "ab", buffering=0)  # unbuffered: a failed write leaves no bytes in a buffer
        self._end = good_end  # where the last good record ends
        if self._file.tell() > good_end:
            self._cut_back()
            os.fsync(self._file.fileno())
        fsync_dir(path.parent)

    def append(self, batch: pa.RecordBatch) -> None:
        """Write and fsync one record. When that fails (a full disk, an I/O error) the call raises and the log
        is cut back to where it was: a write not acknowledged leaves no record, and the next one follows the
        last good record (a torn record before it would hide it from every reader). Where cutting back fails
        too, the next append cuts first, and raises when it cannot."""
        self._cut_back()
        try:
            record = memoryview(encode_record(batch))
            while record:
                record = record[self._file.write(record) :]
            os.fsync(self._file.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                self._cut_back()
            raise
        self._end = self._file.tell()

    def _cut_back(self) -> None:
        if self._file.tell() != self._end:
            self._file.truncate(self._end)
            self._file.seek(self._end)

    def close(self) -> None:
        self._file.close()

    def records(self) -> Iterator[pa.RecordBatch]:
        yield from read_records(self.path)[0]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
