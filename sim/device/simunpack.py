# The booted image's payload (simpayload format) unpacked into DEVDIR/frozen/, compiled to .mpy and
# packed as the ROMFS image DEVDIR/frozen.romfs, in a process of its own:
#   micropython simunpack.py DEVDIR SEGMENTS MPY_CROSS ROMFS [CACHE]
# SEGMENTS: "address:length,..." of the verified image; MPY_CROSS: "" keeps the .py files; ROMFS: 1 or 0;
# CACHE: folder of payloads already compiled (see main).
# simstart runs it during the bootloader step. On the board this is no work at all (the code is in
# flash); in the device's own process its garbage was left scattered over the heap by the few
# objects the boot keeps, holes that every later measurement of the device's heap counted.
# Exit status 0, or 1 with a malformed payload (simstart then fails the boot as before).
import os
import sys

import simpayload

_DIR = 0x4000


def _remove_tree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for entry in entries:
        child = path + "/" + entry[0]
        if entry[1] == _DIR:
            _remove_tree(child)
        else:
            os.remove(child)
    os.rmdir(path)


def _makedirs(path):
    parts = path.split("/")
    for i in range(2, len(parts) + 1):
        try:
            os.mkdir("/".join(parts[:i]))
        except OSError:
            pass


def unpack(flash, segments, target):
    # Streams the first SIMFROZ1 segment into target/. -> the number of files. Raises ValueError.
    _remove_tree(target)
    os.mkdir(target)
    buf = bytearray(4096)
    view = memoryview(buf)

    def read(address, n):
        flash.seek(address)
        flash.readinto(view[:n])
        return view[:n]

    for address, length in segments:
        if length < 12 or bytes(read(address, 8)) != simpayload.MAGIC:
            continue
        count = int.from_bytes(read(address + 8, 4), "little")
        pos = address + 12
        end = address + length
        for _ in range(count):
            name_len = int.from_bytes(read(pos, 2), "little")
            name = bytes(read(pos + 2, name_len)).decode()
            size = int.from_bytes(read(pos + 2 + name_len, 4), "little")
            pos += 6 + name_len
            if pos + size > end or ".." in name.split("/") or name.startswith("/"):
                raise ValueError("malformed payload entry %r" % name)
            if "/" in name:
                _makedirs(target + "/" + name.rsplit("/", 1)[0])
            with open(target + "/" + name, "wb") as f:
                done = 0
                while done < size:
                    n = min(len(buf), size - done)
                    f.write(read(pos + done, n))
                    done += n
            pos += size
        return count
    return 0


def precompile(folder, mpy_cross):
    # Frozen code on the board is bytecode in flash: no compile step, no parser peak in the GC heap.
    # The closest the Unix port gets: .mpy files (compiled here, .py removed so the .mpy is imported).
    # Tracebacks keep file names and line numbers.
    os.system("cd '%s' && find . -name '*.py' | while read f; do '%s' -march=x64 -o \"${f%%.py}.mpy\" \"$f\""
              " && rm \"$f\"; done" % (folder, mpy_cross))


def _key(flash, segments, mpy_cross):
    # The cache key of a payload: SHA-256 of its segment and of the compiler's path; None without one.
    import binascii
    import hashlib

    buf = bytearray(4096)
    for address, length in segments:
        flash.seek(address)
        flash.readinto(memoryview(buf)[:8])
        if length < 12 or bytes(buf[:8]) != simpayload.MAGIC:
            continue
        h = hashlib.sha256(mpy_cross.encode())
        flash.seek(address)
        while length > 0:
            n = flash.readinto(memoryview(buf)[:min(length, len(buf))])
            if not n:
                break
            h.update(memoryview(buf)[:n])
            length -= n
        return binascii.hexlify(h.digest()).decode()
    return None


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def main(devdir, segments, mpy_cross, romfs, cache=""):
    # cache: a folder keeping the compiled tree and image of each payload met before (by content):
    # every boot of every device compiled the same files again (mpy-cross is a Python launcher here).
    target = devdir + "/frozen"
    with open(devdir + "/flash.bin", "rb") as flash:
        key = _key(flash, segments, mpy_cross) if cache and mpy_cross and romfs else None
        entry = "%s/%s" % (cache, key)
        if key and _exists(entry + "/frozen.romfs"):
            _remove_tree(target)
            if os.system("cp -R '%s/frozen' '%s' && cp '%s/frozen.romfs' '%s/frozen.romfs'" % (entry, target, entry, devdir)):
                raise ValueError("cannot copy the cached payload %s" % entry)
            return
        count = unpack(flash, segments, target)
    if not count or not mpy_cross:
        return
    try:
        os.stat(mpy_cross)
    except OSError:
        print("W (boot) no mpy-cross at %s: frozen code stays .py" % mpy_cross)
        return
    precompile(target, mpy_cross)
    if romfs:
        import simromfs

        simromfs.build(target, devdir + "/frozen.romfs", memoryview(bytearray(4096)))
        if key:  # built beside the entry, then renamed: devices booting at once never see half of it
            import binascii

            part = "%s.%s" % (entry, binascii.hexlify(os.urandom(6)).decode())
            os.system("mkdir -p '%s' && cp -R '%s' '%s/frozen' && cp '%s/frozen.romfs' '%s/' && mv -T '%s' '%s'"
                      " 2>/dev/null || rm -rf '%s'" % (part, target, part, devdir, part, part, entry, part))


if __name__ == "__main__":
    try:
        main(sys.argv[1], [tuple(int(n) for n in s.split(":")) for s in sys.argv[2].split(",") if s],
             sys.argv[3], sys.argv[4] == "1", sys.argv[5] if len(sys.argv) > 5 else "")
    except ValueError as e:
        print("E (boot) %s" % e)
        sys.exit(1)
