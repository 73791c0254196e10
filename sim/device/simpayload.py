# The simulator's stand-in for frozen code: a bundle of device files carried inside a firmware image.
#
# On a real board our Python code is frozen into the MicroPython firmware, so an OTA update changes
# the code that runs. A simulated image carries the code of its version in one of its segments; the
# simulated bootloader unpacks the segment of the slot it boots and the runtime imports from there.
#
# Segment data layout (little endian), padded with zeros to a multiple of 4 bytes:
#   b"SIMFROZ1" | u32 file count | per file: u16 name length, name (utf-8, '/'-separated),
#                                            u32 data length, data
# Runs under CPython (image builder, tests) and MicroPython (the simulated bootloader).
import struct

MAGIC = b"SIMFROZ1"


def pack(files):
    # files: list of (name, bytes). Returns the segment data, length a multiple of 4.
    parts = [MAGIC, struct.pack("<I", len(files))]
    for name, data in files:
        encoded = name.encode()
        parts.append(struct.pack("<H", len(encoded)))
        parts.append(encoded)
        parts.append(struct.pack("<I", len(data)))
        parts.append(bytes(data))
    blob = b"".join(parts)
    return blob + b"\0" * (-len(blob) % 4)


def is_payload(segment_data):
    return bytes(segment_data[:8]) == MAGIC


def unpack(segment_data):
    # Returns a list of (name, bytes). Raises ValueError on a malformed bundle.
    data = memoryview(segment_data)
    if bytes(data[:8]) != MAGIC:
        raise ValueError("not a SIMFROZ1 payload")
    count = struct.unpack_from("<I", data, 8)[0]
    pos = 12
    files = []
    for _ in range(count):
        name_len = struct.unpack_from("<H", data, pos)[0]
        name = bytes(data[pos + 2:pos + 2 + name_len]).decode()
        pos += 2 + name_len
        size = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if pos + size > len(data) or ".." in name.split("/") or name.startswith("/"):
            raise ValueError("malformed payload entry %r" % name)
        files.append((name, bytes(data[pos:pos + size])))
        pos += size
    return files
