"""Keep one GPU architecture's machine code in a CUDA shared library, so that FAISS's GPU wheel fits a carry.

FAISS's CUDA-12 GPU wheel (faiss-gpu 1.15.1) holds, in each of libfaiss.so's 182 fat binaries, machine code for
sm_70 to sm_90 and PTX for compute_90: 180 of its 199 MB. The lent GPU machines are Hopper (sm_90) and carries
are limited to 64 MiB; the older faiss-gpu-cu12 wheel that fits has no sm_90 code ("no kernel image is available").

A fat binary (the ``.nv_fatbin`` section; layout as read by cuobjdump and by the CUDA runtime) is a 16-byte
header -- magic 0xBA55ED50, uint16 version, uint16 header size, uint64 size of the entries after it -- followed
by entries, each a header (uint16 kind: 1 PTX, 2 ELF; uint32 header size; uint64 payload size; ...; uint32 arch
at byte 28) and its payload. Each fat binary keeps its place (the runtime finds it by address); its entries other
than the kept architecture's ELF are dropped, its size field is shortened, and the freed tail is zeroed, so the
file keeps its length and layout and compresses to about the kept code. No kept library does this: nvprune
handles object files and static libraries, not a linked shared library.

Usage: python strip_fatbin.py LIB [--arch 90]   (rewrites LIB in place, prints what it kept)
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

MAGIC = 0xBA55ED50
ELF_KIND = 2


def fatbin_section(data: bytes) -> tuple[int, int]:
    """(offset, size) of the ``.nv_fatbin`` section of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("expected a 64-bit ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = sections[shstrndx][4]
    for name, _type, _flags, _addr, offset, size in sections:
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name:end] == b".nv_fatbin":
            return offset, size
    raise ValueError("no .nv_fatbin section: not a CUDA library")


def entries(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(offset, length, kind, arch) of each entry of the fat binary whose entries lie in [start, end)."""
    out, p = [], start
    while p < end:
        kind, _version, header, size = struct.unpack_from("<HHIQ", data, p)
        arch, = struct.unpack_from("<I", data, p + 28)
        if header == 0:
            raise ValueError(f"fat binary entry at {p}: header size 0")
        out.append((p, header + size, kind, arch))
        p += header + size
    return out


def strip(data: bytearray, arch: int) -> tuple[int, int, int]:
    """Keep only ``arch``'s ELF entries in every fat binary; returns (fat binaries, bytes kept, bytes dropped)."""
    offset, size = fatbin_section(data)
    p, end, count, kept_bytes, dropped = offset, offset + size, 0, 0, 0
    while True:
        p = data.find(struct.pack("<I", MAGIC), p, end)
        if p < 0:
            break
        _version, header, fat_size = struct.unpack_from("<HHQ", data, p + 4)
        body = p + header
        items = entries(data, body, body + fat_size)
        kept = [bytes(data[o:o + n]) for o, n, kind, a in items if kind == ELF_KIND and a == arch]
        if not kept:
            raise ValueError(f"fat binary at {p}: no sm_{arch} ELF entry (has {[(k, a) for _, _, k, a in items]})")
        new = b"".join(kept)
        data[body:body + fat_size] = new + bytes(fat_size - len(new))
        struct.pack_into("<Q", data, p + 8, len(new))
        count, kept_bytes, dropped = count + 1, kept_bytes + len(new), dropped + fat_size - len(new)
        p = body + fat_size
    if count == 0:
        raise ValueError("no fat binary found in .nv_fatbin")
    return count, kept_bytes, dropped


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lib", type=Path)
    parser.add_argument("--arch", type=int, default=90, help="SM architecture to keep (90: H100, H200)")
    args = parser.parse_args(argv)
    data = bytearray(args.lib.read_bytes())
    count, kept, dropped = strip(data, args.arch)
    args.lib.write_bytes(data)
    print(f"{args.lib}: {count} fat binaries, kept sm_{args.arch} ELF {kept / 1e6:.1f} MB, zeroed {dropped / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
