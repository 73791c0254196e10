"""The OTAZ container (docs/COMPRESSED.md): compressed images and delta patches as the device decodes
them (lib/ota/inflate.py, lib/ota/delta.py).

    blob = pack_image(image)                     # kind 0: raw deflate of the image
    blob = pack_patch(base, image)               # kind 1: raw deflate of a patch against base
    image = unpack(blob, base=None)              # host-side decoder (tests, `otactl` self-check)

Raw deflate (no zlib/gzip header) with a small window (1 << wbits, 4 KiB by default: the device's
DeflateIO allocates exactly that), and a full flush at every piece boundary (every 1 << piece_log2
bytes of the image), so decoding can start afresh at any piece: the index holds each piece's
compressed offset, and for a patch where the base is read from at that point.

Header, little-endian (88 bytes, then count * 8 bytes of index):
    0  4  magic b"OTAZ"          4 1 kind (0 image, 1 patch)   5 1 wbits   6 1 piece_log2   7 1 zero
    8  4  image_size             12 4 file_size (this whole file)
    16 32 image_sha256           48 4 base_size (patch; 0)     52 32 base_sha256 (patch; zeros)
    84 2  count (pieces)         86 2 zero
    88 count x (u32 compressed offset of the piece, u32 base position at the piece)
"""
import hashlib
import struct
import zlib

MAGIC = b"OTAZ"
HEAD = 88
KIND_IMAGE, KIND_PATCH = 0, 1
WBITS = 12  # 4 KiB window: what the device budgets; 15 (32 KiB) would not fit the 24 KiB goal
PIECE_LOG2 = 16  # 64 KiB of image per piece: a resume downloads at most one piece again


def _header(kind, wbits, piece_log2, image, file_size, index, base=None):
    head = bytearray(HEAD)
    head[0:4] = MAGIC
    head[4], head[5], head[6] = kind, wbits, piece_log2
    struct.pack_into("<II", head, 8, len(image), file_size)
    head[16:48] = hashlib.sha256(image).digest()
    if base is not None:
        struct.pack_into("<I", head, 48, len(base))
        head[52:84] = hashlib.sha256(base).digest()
    struct.pack_into("<H", head, 84, len(index))
    for offset, base_pos in index:
        head += struct.pack("<II", offset, base_pos)
    return bytes(head)


def _deflate(pieces, wbits):
    """pieces: the decompressed stream cut at the piece boundaries -> (stream, [offset in stream])."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -wbits, 9)
    out, offsets = [], []
    length = 0
    for i, piece in enumerate(pieces):
        offsets.append(length)
        data = comp.compress(piece) + comp.flush(zlib.Z_FINISH if i == len(pieces) - 1 else zlib.Z_FULL_FLUSH)
        out.append(data)
        length += len(data)
    return b"".join(out), offsets


def _assemble(kind, wbits, piece_log2, image, pieces, base_positions, base=None):
    stream, offsets = _deflate(pieces, wbits)
    head_len = HEAD + 8 * len(pieces)
    file_size = head_len + len(stream)
    index = [(head_len + off, pos) for off, pos in zip(offsets, base_positions)]
    return _header(kind, wbits, piece_log2, image, file_size, index, base) + stream


def pack_image(image, wbits=WBITS, piece_log2=PIECE_LOG2):
    piece = 1 << piece_log2
    pieces = [image[i:i + piece] for i in range(0, len(image), piece)]
    return _assemble(KIND_IMAGE, wbits, piece_log2, image, pieces, [0] * len(pieces))


def pack_patch(base, image, wbits=WBITS, piece_log2=PIECE_LOG2):
    from . import zdelta

    pieces, positions = zdelta.patch_pieces(base, image, 1 << piece_log2)
    return _assemble(KIND_PATCH, wbits, piece_log2, image, pieces, positions, base)


def parse_header(blob):
    if len(blob) < HEAD or blob[:4] != MAGIC:
        raise ValueError("not an OTAZ container")
    kind, wbits, piece_log2 = blob[4], blob[5], blob[6]
    image_size, file_size = struct.unpack_from("<II", blob, 8)
    base_size = struct.unpack_from("<I", blob, 48)[0]
    count = struct.unpack_from("<H", blob, 84)[0]
    index = [struct.unpack_from("<II", blob, HEAD + 8 * i) for i in range(count)]
    return {"kind": kind, "wbits": wbits, "piece_log2": piece_log2, "image_size": image_size,
            "file_size": file_size, "image_sha256": blob[16:48].hex(), "base_size": base_size,
            "base_sha256": blob[52:84].hex(), "count": count, "index": index}


def unpack(blob, base=None):
    """The image a container decodes to (checked against its header's sha256). Raises ValueError."""
    info = parse_header(blob)
    if info["file_size"] != len(blob):
        raise ValueError("file_size %d, have %d" % (info["file_size"], len(blob)))
    dec = zlib.decompressobj(-info["wbits"])
    stream = dec.decompress(blob[info["index"][0][0]:]) + dec.flush()
    if not dec.eof or dec.unused_data:
        raise ValueError("deflate stream does not end with the file")
    if info["kind"] == KIND_PATCH:
        from . import zdelta

        if base is None or hashlib.sha256(base).hexdigest() != info["base_sha256"]:
            raise ValueError("wrong base")
        image = zdelta.apply(base, stream)
    else:
        image = stream
    if len(image) != info["image_size"] or hashlib.sha256(image).hexdigest() != info["image_sha256"]:
        raise ValueError("decodes to another image")
    return image
