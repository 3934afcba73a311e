"""tools/device/strip_fatbin.py: one architecture's machine code kept in each fat binary, the rest zeroed."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "device" / "strip_fatbin.py"
spec = importlib.util.spec_from_file_location("strip_fatbin", TOOL)
strip_fatbin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(strip_fatbin)


def _entry(kind: int, arch: int, payload: bytes) -> bytes:
    header = struct.pack("<HHIQIIHHI", kind, 0x101, 64, len(payload), 0, 0, 0, 0, arch).ljust(64, b"\0")
    return header + payload


def _fatbin(entries: list[bytes]) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", strip_fatbin.MAGIC, 1, 16, len(body)) + body


def _elf(section: bytes) -> bytes:
    """A 64-bit ELF file with two sections: .nv_fatbin (``section``) and the section-name table."""
    names = b"\0.nv_fatbin\0.shstrtab\0"
    data_at, names_at = 64, 64 + len(section)
    shoff = names_at + len(names)
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    sections = [bytes(64),
                struct.pack("<IIQQQQ", 1, 1, 0, 0, data_at, len(section)).ljust(64, b"\0"),
                struct.pack("<IIQQQQ", 12, 3, 0, 0, names_at, len(names)).ljust(64, b"\0")]
    return bytes(header) + section + names + b"".join(sections)


def _listing(data: bytes) -> list[list[tuple[int, int]]]:
    offset, size = strip_fatbin.fatbin_section(data)
    out, p = [], offset
    while (p := data.find(struct.pack("<I", strip_fatbin.MAGIC), p, offset + size)) >= 0:
        _, header, fat_size = struct.unpack_from("<HHQ", data, p + 4)
        out.append([(kind, arch) for _, _, kind, arch in strip_fatbin.entries(data, p + header, p + header + fat_size)])
        p += header + fat_size
    return out


def test_keeps_the_architectures_elf_in_place_and_zeroes_the_rest():
    first = _fatbin([_entry(2, 80, b"a" * 40), _entry(1, 90, b"p" * 24), _entry(2, 90, b"KEEP-ONE" * 4)])
    second = _fatbin([_entry(2, 90, b"KEEP-TWO" * 2), _entry(2, 86, b"b" * 8)])
    data = bytearray(_elf(first + second))
    before = len(data)
    count, kept, dropped = strip_fatbin.strip(data, 90)
    assert (count, len(data)) == (2, before)
    assert kept == 64 + 32 + 64 + 16 and dropped == (64 + 40 + 64 + 24) + (64 + 8)
    assert _listing(bytes(data)) == [[(2, 90)], [(2, 90)]]
    second_at = bytes(data).index(struct.pack("<I", strip_fatbin.MAGIC), 64 + 1)
    assert second_at == 64 + len(first)  # each fat binary stays where the runtime looks for it
    assert b"KEEP-ONE" * 4 in data and b"KEEP-TWO" * 2 in data and b"a" * 40 not in data and b"p" * 24 not in data


def test_a_fat_binary_without_the_architecture_is_refused_before_anything_is_written():
    data = bytearray(_elf(_fatbin([_entry(2, 80, b"a" * 8)])))
    with pytest.raises(ValueError, match=r"no sm_90 ELF entry \(has \[\(2, 80\)\]\)"):
        strip_fatbin.strip(data, 90)


def test_a_file_that_is_not_a_cuda_library_is_refused():
    with pytest.raises(ValueError, match="expected a 64-bit ELF file"):
        strip_fatbin.fatbin_section(b"not an elf")
    names = b"\0.text\0.shstrtab\0"
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x28, 64 + len(names))
    struct.pack_into("<HHH", header, 0x3A, 64, 2, 1)
    elf = bytes(header) + names + bytes(64) + struct.pack("<IIQQQQ", 7, 3, 0, 0, 64, len(names)).ljust(64, b"\0")
    with pytest.raises(ValueError, match="no .nv_fatbin section"):
        strip_fatbin.fatbin_section(elf)
