# A ROMFS image (MicroPython's read-only filesystem, vfs.VfsRom) of the booted image's frozen modules,
# so that the simulated device runs their bytecode in place, as the board runs frozen bytecode from
# flash, instead of loading it into the GC heap.
#
# Why: an .mpy imported from a directory is read into GC blocks (bytecode, strings, qstr text); the
# loads leave holes between the objects that stay, and a 3-4 KB block no longer fits in them (issue 13,
# docs/MEMORY.md). A file opened from a VfsRom has the buffer protocol, so extmod/vfs_reader.c reads it
# with mp_reader_new_mem(..., MP_READER_IS_ROM), and py/persistentcode.c (mp_reader_try_read_rom)
# then points bytecode, str/bytes constants and qstr text into the image instead of copying them.
# Function, class and module objects are still made in the heap at import, as for frozen code.
#
# Format (MicroPython tools/mpremote/mpremote/romfs.py, VfsRomWriter; read by extmod/vfs_rom.c):
#   image  = b"\xd2\xcd\x31" uint(len(records)) records  (len padded with 0x80 so the image is even)
#   record = uint(kind) uint(len(payload)) payload;  uint = big-endian base-128, high bit = more
#   file   (kind 5): uint(len(name)) name  [kind 2 (verbatim data) record of the file's bytes]
#   dir    (kind 4): uint(len(name)) name  records
# Written in two passes (sizes, then bytes) through one small buffer: no file is held in the heap.
import os

_HEADER = b"\xd2\xcd\x31"
_DIR = 0x4000


def _uint(n):
    out = bytes([n & 0x7F])
    n >>= 7
    while n:
        out = bytes([0x80 | (n & 0x7F)]) + out
        n >>= 7
    return out


def _record_len(payload_len):
    # kind (one byte: kinds are < 0x80) + length + payload
    return 1 + len(_uint(payload_len)) + payload_len


def _entries(folder):
    # Sorted (name, is_dir, size): the same order on every build, as mpremote's.
    out = []
    for entry in os.ilistdir(folder):
        name = entry[0]
        if name in (".", ".."):
            continue
        is_dir = entry[1] == _DIR
        out.append((name, is_dir, 0 if is_dir else os.stat(folder + "/" + name)[6]))
    out.sort()
    return out


def _dir_content_len(folder):
    total = 0
    for name, is_dir, size in _entries(folder):
        if is_dir:
            payload = len(_uint(len(name))) + len(name) + _dir_content_len(folder + "/" + name)
        else:
            payload = len(_uint(len(name))) + len(name) + _record_len(size)
        total += _record_len(payload)
    return total


def _write_dir(out, folder, buf):
    for name, is_dir, size in _entries(folder):
        path = folder + "/" + name
        if is_dir:
            inner = _dir_content_len(path)
            out.write(bytes([4]) + _uint(len(name) + len(_uint(len(name))) + inner))
            out.write(_uint(len(name)) + name.encode())
            _write_dir(out, path, buf)
            continue
        payload = len(_uint(len(name))) + len(name) + _record_len(size)
        out.write(bytes([5]) + _uint(payload) + _uint(len(name)) + name.encode())
        out.write(bytes([2]) + _uint(size))
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                out.write(buf[:n] if n < len(buf) else buf)


def build(folder, path, buf):
    # Writes the ROMFS image of folder's tree to path; -> its size in bytes. buf: a scratch buffer.
    content = _dir_content_len(folder)
    size_field = _uint(content)
    if (len(_HEADER) + len(size_field) + content) % 2:
        size_field = b"\x80" + size_field  # a redundant leading 0 digit: extmod/vfs_rom.c wants even
    with open(path, "wb") as out:
        out.write(_HEADER + size_field)
        _write_dir(out, folder, buf)
    return len(_HEADER) + len(size_field) + content


if __name__ == "__main__":  # micropython simromfs.py FOLDER IMAGE (simstart runs it as a process)
    import sys

    build(sys.argv[1], sys.argv[2], memoryview(bytearray(4096)))
