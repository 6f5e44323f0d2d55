"""The cgroup v2 device program: Docker's device rules as a BPF_PROG_TYPE_CGROUP_DEVICE program.

A tiny assembler for the few eBPF instructions needed, so the program reads as data and is
tested as data (steps/runtime/devices.py loads and attaches it).
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

# --- cgroup v2: the eBPF program -----------------------------------------------
# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; } (the program's r1):
# access_type's low 16 bits are the type, its high 16 bits the requested accesses.

DEV_BLOCK, DEV_CHAR = 1, 2  # BPF_DEVCG_DEV_*
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4  # BPF_DEVCG_ACC_*
ACC_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
TYPE_BITS = {"b": DEV_BLOCK, "c": DEV_CHAR}

# Opcodes (include/uapi/linux/bpf_common.h + bpf.h): class | op | source.
# BPF_LDX|BPF_W|BPF_MEM; BPF_ALU (32-bit: clears the upper half) with BPF_K (imm) or BPF_X
# (register); BPF_JMP with BPF_K. Jumps are relative to the next instruction.
OPCODES = {
    "ldxw": 0x61,   # dst = *(u32 *)(src + off)
    "and32": 0x54,  # dst &= imm
    "rsh32": 0x74,  # dst >>= imm
    "mov32": 0xB4,  # dst = imm
    "movr32": 0xBC,  # dst = src
    "jne": 0x55,    # if dst != imm: pc += off
    "exit": 0x95,   # return r0
}
R0, R1, R2, R3, R4, R5 = range(6)


@dataclass(frozen=True)
class Insn:
    """One instruction before assembly; a jump names its target label instead of an offset."""

    op: str
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: str | None = None


def encode(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; } in host order
    (the bitfields: dst is the low nibble on little-endian hosts, the high one on big-endian)."""
    regs = (src << 4 | dst) if sys.byteorder == "little" else (dst << 4 | src)
    return struct.pack("=BBhi", code, regs, off, imm)


def decode(program: bytes) -> list[tuple[int, int, int, int, int]]:
    """(code, dst, src, off, imm) of each instruction: the inverse of encode, for tests and debugging."""
    out = []
    for i in range(0, len(program), 8):
        code, regs, off, imm = struct.unpack_from("=BBhi", program, i)
        dst, src = (regs & 0xF, regs >> 4) if sys.byteorder == "little" else (regs >> 4, regs & 0xF)
        out.append((code, dst, src, off, imm))
    return out


def assemble(lines: list[Insn | str]) -> bytes:
    """Two passes: a str is a label at the next instruction's index; jumps get offsets to it."""
    labels, pc = {}, 0
    for line in lines:
        if isinstance(line, str):
            labels[line] = pc
        else:
            pc += 1
    out, count, pc = [], pc, 0
    for line in lines:
        if isinstance(line, str):
            continue
        off = line.off
        if line.target is not None:
            # forward and inside: the verifier refuses back-edges and jumps out of the program
            if not pc < labels.get(line.target, -1) < count:
                raise ValueError(f"instruction {pc} jumps to {line.target!r}, not a label ahead of it")
            off = labels[line.target] - (pc + 1)
        out.append(encode(OPCODES[line.op], line.dst, line.src, off, line.imm))
        pc += 1
    return b"".join(out)


def _prologue() -> list[Insn]:
    """r2 = type, r3 = requested accesses, r4 = major, r5 = minor (r1 is the ctx pointer)."""
    return [Insn("ldxw", R2, R1, 0), Insn("and32", R2, imm=0xFFFF),
            Insn("ldxw", R3, R1, 0), Insn("rsh32", R3, imm=16),
            Insn("ldxw", R4, R1, 4), Insn("ldxw", R5, R1, 8)]


def _access_bits(access: str) -> int:
    """'rw' -> BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE."""
    bits = 0
    for a in access:
        bits |= ACC_BITS[a]
    return bits


def _rule_block(rule, skip: str) -> list[Insn]:
    """Allow (return 1) when the request matches rule, else jump to the label skip."""
    block = []
    if not rule.is_all:
        block.append(Insn("jne", R2, imm=TYPE_BITS[rule.type], target=skip))
    if not rule.every_access:
        # every requested bit must be one the rule grants: (requested & ~granted) == 0
        denied = ~_access_bits(rule.access) & 0xFFFF
        block += [Insn("movr32", R1, R3), Insn("and32", R1, imm=denied), Insn("jne", R1, imm=0, target=skip)]
    if rule.major is not None:
        block.append(Insn("jne", R4, imm=rule.major, target=skip))
    if rule.minor is not None:
        block.append(Insn("jne", R5, imm=rule.minor, target=skip))
    return block + [Insn("mov32", R0, imm=1), Insn("exit")]


def v2_listing(rules: list) -> list[Insn | str]:
    """The program before assembly: the prologue, one block per rule, then deny (return 0)."""
    lines: list[Insn | str] = _prologue()
    for i, rule in enumerate(rules):
        lines += [f"rule{i}", *_rule_block(rule, f"rule{i + 1}" if i + 1 < len(rules) else "deny")]
        if rule.is_all:
            return lines  # always returns: anything after it would be unreachable, which the verifier refuses
    return lines + ["deny", Insn("mov32", R0, imm=0), Insn("exit")]


def v2_program(rules: list) -> bytes:
    """A BPF_PROG_TYPE_CGROUP_DEVICE program allowing exactly what rules allow."""
    return assemble(v2_listing(rules))
