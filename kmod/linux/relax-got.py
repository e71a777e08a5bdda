#!/usr/bin/env python3
"""relax-got.py OBJ: rewrite GOT-indirect references in a relocatable x86-64 ELF object into
direct ones, in place (what a linker's GOTPCRELX relaxation does in a final link).

Why: rustc marks the target x86_64-unknown-none "no PLT", so LLVM calls the memcpy/memset it
emits for copies through the GOT (`call *memcpy@GOTPCREL(%rip)`), even with static relocations.
A kernel module has no GOT and the module loader rejects GOTPCREL, and `ld -r` never relaxes.
Every such reference here is to a function in the same module (compiler_builtins' mem*) or in the
kernel, so the direct form is exact:

    ff 15 <GOTPCREL>   call *sym(%rip)   ->  67 e8 <PLT32>  addr32 call sym
    ff 25 <GOTPCREL>   jmp  *sym(%rip)   ->  67 e9 <PLT32>  addr32 jmp  sym
    REX 8b /r <GOTPCREL> mov sym(%rip),%r ->  REX 8d /r <PC32> lea sym(%rip),%r

Any other GOT relocation is an error (exit 1), so check-ko still catches what this cannot fix.
"""
import struct
import sys

R_X86_64_PC32 = 2
R_X86_64_PLT32 = 4
GOT_TYPES = {9, 41, 42}  # GOTPCREL, GOTPCRELX, REX_GOTPCRELX
SHT_RELA = 4


def main(path):
    data = bytearray(open(path, "rb").read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit(f"{path}: not a little-endian ELF64 object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = []
    for i in range(shnum):
        name, typ, flags, addr, off, size, link, info, align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize)
        secs.append((typ, off, size, info, entsize))
    fixed = 0
    for typ, off, size, info, entsize in secs:
        if typ != SHT_RELA:
            continue
        target_off = secs[info][1]
        for r in range(off, off + size, entsize):
            r_offset, r_info, r_addend = struct.unpack_from("<QQq", data, r)
            rtype = r_info & 0xFFFFFFFF
            if rtype not in GOT_TYPES:
                continue
            at = target_off + r_offset
            op0, op1 = data[at - 2], data[at - 1]
            if op0 == 0xFF and op1 in (0x15, 0x25):
                data[at - 2] = 0x67
                data[at - 1] = 0xE8 if op1 == 0x15 else 0xE9
                newtype = R_X86_64_PLT32
            elif op0 == 0x8B and (op1 & 0xC7) == 0x05 and (data[at - 3] & 0xF0) == 0x40:
                data[at - 2] = 0x8D
                newtype = R_X86_64_PC32
            else:
                sys.exit(f"{path}: cannot relax GOT relocation type {rtype} at {r_offset:#x} "
                         f"(bytes {data[at - 3]:02x} {op0:02x} {op1:02x})")
            struct.pack_into("<Q", data, r + 8, (r_info & ~0xFFFFFFFF) | newtype)
            fixed += 1
    open(path, "wb").write(data)
    print(f"relax-got: {fixed} GOT reference(s) made direct", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
