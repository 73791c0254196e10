"""Delta patches for the device (docs/COMPRESSED.md): bsdiff's matching, our streaming format.

The differences are found by bsdiff4 (PyPI, maintained; `bsdiff4.core.diff`, the suffix-array diff
of Colin Percival's bsdiff). Its own BSDIFF4 file cannot be applied by the device: three bzip2
streams (control, diff, extra) read side by side, and MicroPython has no bzip2. So the same
control triples are written as one sequential stream of operations, which the OTAZ container then
deflates like an image (zeros of unchanged code compress to almost nothing):

    b"A" u24 n, 0, n bytes     add: image byte = (base[pos] + byte) & 0xFF, pos += 1, n times
    b"I" u24 n, 0, n bytes     insert: image bytes as they are
    b"S" u24 d, sign           seek: pos += d (sign 0) or pos -= d (sign 1) in the base
Five-byte headers, little-endian 24-bit numbers (an image is at most 4 MiB): the device decodes them
with small-int arithmetic, no struct tuple and no big int on a 32-bit port.

No operation crosses an image piece boundary (every 1 << piece_log2 bytes of the image), so decoding
can restart at any piece with the base position the container's index gives. An add never reads
outside the base (bsdiff counts such bytes as 0: they are written as inserts).
"""
import struct

import bsdiff4.core

ADD, INSERT, SEEK = b"A", b"I", b"S"


def operations(base, image):
    """bsdiff's control as (kind, base position, data or seek) in image order."""
    control, diff, extra = bsdiff4.core.diff(base, image)
    ops = []
    pos = dpos = epos = 0
    for i in range(0, len(control), 24):
        x = bsdiff4.core.decode_int64(control[i:i + 8])
        y = bsdiff4.core.decode_int64(control[i + 8:i + 16])
        z = bsdiff4.core.decode_int64(control[i + 16:i + 24])
        if x:
            data = diff[dpos:dpos + x]
            dpos += x
            # The part whose base bytes lie inside the base is an add; bsdiff counts base bytes
            # outside it as 0, so the rest is the image's own bytes: inserts.
            lo = min(max(0, -pos), x)
            hi = max(lo, min(x, len(base) - pos))
            if lo:
                ops.append((INSERT, None, bytes(data[:lo])))
            if hi > lo:
                ops.append((ADD, pos + lo, data[lo:hi]))
            if x > hi:
                ops.append((INSERT, None, bytes(data[hi:])))
            pos += x
        if y:
            ops.append((INSERT, None, extra[epos:epos + y]))
            epos += y
        pos += z
    return ops


def patch_pieces(base, image, piece):
    """The operation stream cut at every `piece` bytes of the image -> (pieces, base position at the
    start of each piece)."""
    ops = operations(base, image)
    pieces, positions = [], []
    out = bytearray()
    written = 0  # image bytes so far
    pos = 0  # base position the device holds
    boundary = 0

    def start_piece():
        nonlocal out, boundary
        if boundary:
            pieces.append(bytes(out))
        out = bytearray()
        positions.append(pos)
        boundary += piece

    start_piece()
    for kind, at, data in ops:
        if kind == ADD and at != pos:
            out += _header(SEEK, abs(at - pos), 1 if at < pos else 0)
            pos = at
        done = 0
        while done < len(data):
            if written == boundary:
                start_piece()
            n = min(len(data) - done, boundary - written)
            out += _header(kind, n) + bytes(data[done:done + n])
            done += n
            written += n
            if kind == ADD:
                pos += n
    pieces.append(bytes(out))
    assert written == len(image) and len(pieces) == (len(image) + piece - 1) // piece
    return pieces, positions


def _header(kind, n, last=0):
    if not 0 <= n < 1 << 24:
        raise ValueError("operation of %d bytes" % n)
    return kind + struct.pack("<I", n)[:3] + bytes([last])


def _number(stream, i):
    return stream[i + 1] | stream[i + 2] << 8 | stream[i + 3] << 16


def apply(base, stream):
    """The host's applier (tests, otactl's check of what it wrote): the device's algorithm."""
    out = bytearray()
    pos = i = 0
    while i < len(stream):
        kind = stream[i:i + 1]
        if kind == SEEK:
            pos += -_number(stream, i) if stream[i + 4] else _number(stream, i)
            i += 5
            continue
        n = _number(stream, i)
        data = stream[i + 5:i + 5 + n]
        i += 5 + n
        if kind == ADD:
            out += bytes((a + b) & 0xFF for a, b in zip(base[pos:pos + n], data))
            pos += n
        elif kind == INSERT:
            out += data
        else:
            raise ValueError("bad operation %r" % kind)
    return bytes(out)
