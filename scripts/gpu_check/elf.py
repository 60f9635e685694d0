"""What an x86-64 ELF binary needs from the dynamic loader, read with the standard library
(the GPU machine may lack readelf/objdump): its NEEDED libraries and the symbol versions it
requires from each (`.gnu.version_r`), e.g. {"libc.so.6": ["GLIBC_2.2.5", ..., "GLIBC_2.34"]}.
Uses the section headers, which `strip` keeps.
"""

import struct

SHT_DYNAMIC = 6
SHT_GNU_VERNEED = 0x6FFFFFFE
DT_NEEDED = 1


def _cstr(blob, offset):
    end = blob.index(b"\0", offset)
    return blob[offset:end].decode(errors="replace")


def needs(path):
    """{"needed": [lib, ...], "versions": {lib: [version, ...]}, "max_glibc": "2.34"|None}."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(shnum):
        name, kind, _flags, _addr, offset, size, link, info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize)
        sections.append({"type": kind, "offset": offset, "size": size, "link": link,
                         "info": info, "entsize": entsize})

    def strtab(index):
        s = sections[index]
        return data[s["offset"]:s["offset"] + s["size"]]

    needed = []
    versions = {}
    for s in sections:
        if s["type"] == SHT_DYNAMIC:
            names = strtab(s["link"])
            for off in range(s["offset"], s["offset"] + s["size"], 16):
                tag, val = struct.unpack_from("<qQ", data, off)
                if tag == 0:
                    break
                if tag == DT_NEEDED:
                    needed.append(_cstr(names, val))
        elif s["type"] == SHT_GNU_VERNEED:
            names = strtab(s["link"])
            off = s["offset"]
            for _ in range(s["info"]):
                _ver, cnt, file_off, aux, nxt = struct.unpack_from("<HHIII", data, off)
                lib = _cstr(names, file_off)
                a = off + aux
                for _ in range(cnt):
                    _hash, _flags, _other, name_off, anext = struct.unpack_from("<IHHII", data, a)
                    versions.setdefault(lib, []).append(_cstr(names, name_off))
                    a += anext
                off += nxt
                if nxt == 0:
                    break
    glibc = [v[len("GLIBC_"):] for vs in versions.values() for v in vs
             if v.startswith("GLIBC_") and v[len("GLIBC_"):].replace(".", "").isdigit()]
    top = max(glibc, key=lambda v: tuple(int(x) for x in v.split(".")), default=None)
    return {"needed": needed, "versions": {k: sorted(set(v)) for k, v in versions.items()},
            "max_glibc": top}


def version_tuple(v):
    return tuple(int(x) for x in v.split(".") if x.isdigit())
