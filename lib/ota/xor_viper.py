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
    words = ptr32(int(p) + i)  # noqa: F821
    n = (end - i) >> 2
    x = 0
    j = 0
    while j < n:
        x ^= words[j]
        j += 1
    i += n << 2
    while i < end:
        acc ^= p[i]
        i += 1
    x ^= x >> 16
    x ^= x >> 8
    return (acc ^ x) & 0xFF
