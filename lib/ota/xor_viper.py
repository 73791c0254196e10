# The image checksum's inner loop as viper (RISC-V machine code on the C3): XOR of buf[start:end]
# folded into acc, one byte, no allocation. Apart from image_verify.py so that a firmware without
# the native emitter still imports image_verify (which then takes its bytecode loop): this module
# alone fails to compile or load there (docs/HARDWARE.md, "Native code on the C3").
import micropython


@micropython.viper
def xor(buf, start: int, end: int, acc: int) -> int:
    p = ptr8(buf)  # noqa: F821 (viper builtin)
    i = start
    while i < end and ((int(p) + i) & 3):  # ptr32 must be aligned on RISC-V
        acc ^= p[i]
        i += 1
    # 32 bytes a turn through a moving pointer: the loop's own steps (index, bound, branch) were
    # most of its time; 8 loads at fixed offsets are not (4 KiB: 3.8 us a word a turn, 1.0 us
    # this way, Unix port; docs/MEMORY.md "Streaming (fourth pass)").
    at = int(p) + i
    stop = at + ((end - i) & ~31)
    x = 0
    while at < stop:
        w = ptr32(at)  # noqa: F821
        x ^= w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4] ^ w[5] ^ w[6] ^ w[7]
        at += 32
    i = at - int(p)
    while i < end:  # the last 0..31 bytes
        acc ^= p[i]
        i += 1
    x ^= x >> 16
    x ^= x >> 8
    return (acc ^ x) & 0xFF
