# CPython fakes for the device package's unit tests: an esp32 module whose Partition follows
# docs/CHIP.md §1 to the error codes (NOR flash: erase sets 0xFF, programming ANDs), a scripted HTTPS
# server behind a fake `https.open`, and a builder of small valid ESP32-C3 app images.
# Tests place nothing in sys.modules: update.run() and heap.check() take the modules as arguments.
import binascii
import errno
import functools
import hashlib
import os
import struct


from ota.errors import OtaError

SECTOR = 4096
ESP_ERR_INVALID_ARG = -258
ESP_ERR_INVALID_SIZE = -260
ESP_ERR_OTA_VALIDATE_FAILED = -5379


# ---------------------------------------------------------------- images (docs/CHIP.md §3)

def app_descriptor(version="", project="ota-test", secure_version=0, magic=0xABCD5432):
    # esp_app_desc_t, 256 bytes: magic, secure_version, reserved, version[32] @0x10 (image 0x30),
    # project_name[32], time[16], date[16], idf_ver[32], app_elf_sha256[32], reserved.
    desc = struct.pack("<II8x", magic, secure_version)
    desc += version.encode().ljust(32, b"\0") + project.encode().ljust(32, b"\0")
    desc += b"12:00:00".ljust(16, b"\0") + b"Jan  1 2026".ljust(16, b"\0")
    desc += b"v5.2.2".ljust(32, b"\0") + bytes(32)
    return desc.ljust(256, b"\0")


@functools.lru_cache(maxsize=64)  # bytes, never changed: make_device fills two 256 KiB slots per test
def pattern(n, seed=1):
    # Deterministic non-trivial bytes (no long 0xFF runs, so a missing write shows): SHAKE-256's
    # output stream, one call in C (a Python loop per word took seconds for a 1.7 MB image, and
    # mutation testing pays it again in every forked test run).
    return hashlib.shake_256(b"fakes.pattern" + seed.to_bytes(8, "little")).digest(n)


def build_image(version="1.0.0", payload_size=20000, chip_id=5, min_rev=3, max_rev=199,
                hash_appended=True, desc_magic=0xABCD5432, seed=1):
    # A minimal valid C3 app image: segment 0 = app descriptor + filler, segment 1 = payload.
    seg0 = app_descriptor(version, magic=desc_magic) + pattern(256, seed + 100)
    seg1 = pattern(payload_size - payload_size % 4, seed)
    segments = [(0x3C000020, seg0), (0x42000020, seg1)]
    header = bytearray(24)
    header[0] = 0xE9
    header[1] = len(segments)
    header[2] = 2
    header[3] = 0x20
    header[4:8] = struct.pack("<I", 0x40380000)
    header[8] = 0xEE
    header[12:14] = struct.pack("<H", chip_id)
    header[15:17] = struct.pack("<H", min_rev)
    header[17:19] = struct.pack("<H", max_rev)
    header[23] = 1 if hash_appended else 0
    return assemble_image(header, segments, hash_appended)


def assemble_image(header, segments, hash_appended=True):
    # The 24-byte header, each (load address, data) segment, the XOR checksum (seed 0xEF) and, if
    # hash_appended, the SHA-256 of everything before it (docs/CHIP.md §3).
    image = bytearray(header)
    checksum = 0xEF
    for addr, data in segments:
        image += struct.pack("<II", addr, len(data)) + data
        for b in data:
            checksum ^= b
    image += bytes(15 - len(image) % 16)  # zero padding: the checksum byte ends a 16-byte block
    image.append(checksum)
    if hash_appended:
        image += hashlib.sha256(image).digest()
    return bytes(image)


def image_is_valid(data):
    # What esp_image_verify checks at set_boot (magic, chip, segments, checksum, hash); not the
    # app descriptor (docs/CHIP.md §3).
    if len(data) < 24 or data[0] != 0xE9 or struct.unpack_from("<H", data, 12)[0] != 5:
        return False
    pos, checksum = 24, 0xEF
    for _ in range(data[1]):
        if pos + 8 > len(data):
            return False
        length = struct.unpack_from("<I", data, pos + 4)[0]
        pos += 8
        if pos + length > len(data):
            return False
        for b in data[pos:pos + length]:
            checksum ^= b
        pos += length
    pos += 15 - pos % 16
    if pos >= len(data) or data[pos] != checksum:
        return False
    pos += 1
    if data[23] == 1:
        return hashlib.sha256(data[:pos]).digest() == bytes(data[pos:pos + 32])
    return True


# ---------------------------------------------------------------- flash and esp32.Partition

class Slot:
    # One partition's flash, shared by every Partition object made for it (each lookup is a new
    # object on the device too). NOR: erase -> 0xFF, program -> old AND new. Counters per sector.
    def __init__(self, label, size, address, subtype, type_=0, fill=0xFF):
        self.label, self.size, self.address, self.subtype, self.type = label, size, address, subtype, type_
        self.data = bytearray([fill]) * size
        self.erases = [0] * (size // SECTOR)
        self.bytes_programmed = 0
        self.dirty_programs = 0  # programs over bytes that were not all 0xFF
        self.overprogrammed_bytes = 0  # bytes whose stored value differs from the one asked for
        self.writeblocks_calls = []  # (block, length, offset)
        self.set_boot_calls = 0

    def erase(self, addr):
        self.data[addr:addr + SECTOR] = b"\xff" * SECTOR
        self.erases[addr // SECTOR] += 1

    def program(self, addr, buf):
        # NOR flash programming only clears bits: the cell keeps old AND new. One big-int AND instead
        # of a loop per byte (this runs for every chunk of every unit test's download).
        n = len(buf)
        buf = bytes(buf)
        old = bytes(self.data[addr:addr + n])
        if old != b"\xff" * n:
            self.dirty_programs += 1
        stored = (int.from_bytes(old, "little") & int.from_bytes(buf, "little")).to_bytes(n, "little")
        if stored != buf:
            self.overprogrammed_bytes += sum(1 for s, b in zip(stored, buf) if s != b)
        self.data[addr:addr + n] = stored
        self.bytes_programmed += n

    @property
    def total_erases(self):
        return sum(self.erases)


def _esp_error(code, name):
    return OSError(code, name)


class FakeEsp32:
    # Stands for the `esp32` module: FakeEsp32(slots, running="ota_0").Partition(...), idf_heap_info.
    HEAP_DATA = 4
    HEAP_EXEC = 1

    def __init__(self, slots, running="ota_0", boot=None, heap_regions=None):
        self.slots = {s.label: s for s in slots}
        self.order = [s.label for s in slots]
        self.running = running
        self.boot = boot or running
        self.heap_regions = heap_regions if heap_regions is not None else [(200000, 150000, 120000, 100000)]
        esp = self

        class Partition:
            BOOT = 0
            RUNNING = 1
            TYPE_APP = 0
            TYPE_DATA = 1

            def __init__(self, id, block_size=4096):
                if isinstance(id, str):
                    if id not in esp.slots:
                        raise OSError(errno.ENOENT, "ENOENT")
                    label = id
                elif id == Partition.BOOT:
                    label = esp.boot
                elif id == Partition.RUNNING:
                    label = esp.running
                else:
                    raise ValueError("invalid partition id")
                self.slot = esp.slots[label]
                self.block_size = block_size

            @staticmethod
            def find(type=0, subtype=0xFF, label=None, block_size=4096):
                slots = [esp.slots[name] for name in esp.order]
                return [Partition(s.label, block_size) for s in slots if s.type == type
                        and subtype in (0xFF, s.subtype) and label in (None, s.label)]

            def info(self):
                s = self.slot
                return (s.type, s.subtype, s.address, s.size, s.label, False)

            def _range(self, block, length, offset=0):
                start = block * self.block_size + offset
                if start > self.slot.size or start < 0:
                    raise _esp_error(ESP_ERR_INVALID_ARG, "ESP_ERR_INVALID_ARG")
                if start + length > self.slot.size:
                    raise _esp_error(ESP_ERR_INVALID_SIZE, "ESP_ERR_INVALID_SIZE")
                return start

            def readblocks(self, block, buf, offset=0):
                start = self._range(block, len(buf), offset)
                memoryview(buf)[:] = self.slot.data[start:start + len(buf)]

            def writeblocks(self, block, buf, offset=None):
                n = len(buf)
                if offset is None:  # 2 args: erase the range, then program
                    if n % self.block_size or n % SECTOR:
                        raise _esp_error(ESP_ERR_INVALID_SIZE, "ESP_ERR_INVALID_SIZE")
                    start = self._range(block, n)
                    for addr in range(start, start + n, SECTOR):
                        self.slot.erase(addr)
                else:  # 3 args: never erases; NOR ANDs old and new
                    start = self._range(block, n, offset)
                self.slot.writeblocks_calls.append((block, n, offset))
                self.slot.program(start, buf)

            def ioctl(self, cmd, arg):
                if cmd in (1, 2, 3):
                    return 0
                if cmd == 4:
                    return self.slot.size // self.block_size
                if cmd == 5:
                    return self.block_size
                if cmd == 6:
                    if self.block_size != SECTOR:
                        return -22
                    self._range(arg, SECTOR)
                    self.slot.erase(arg * SECTOR)
                    return 0
                return None

            def get_next_update(self):
                ota = [n for n in esp.order if esp.slots[n].type == 0 and 0x10 <= esp.slots[n].subtype <= 0x1F]
                if not ota:
                    raise OSError(errno.ENOENT, "ENOENT")
                if self.slot.subtype == 0x00:
                    return Partition(ota[0])
                return Partition(ota[(ota.index(self.slot.label) + 1) % len(ota)])

            def set_boot(self):
                self.slot.set_boot_calls += 1
                if not image_is_valid(self.slot.data):
                    raise _esp_error(ESP_ERR_OTA_VALIDATE_FAILED, "ESP_ERR_OTA_VALIDATE_FAILED")
                esp.boot = self.slot.label

            @staticmethod
            def mark_app_valid_cancel_rollback():
                return None

        self.Partition = Partition

    def idf_heap_info(self, capabilities):
        return list(self.heap_regions) if capabilities == self.HEAP_DATA else []


def make_device(slot_size=0x40000, running="ota_0", otadata=False, **kw):
    # Two OTA slots of slot_size; the inactive one starts holding stale data (an older image).
    # otadata=True adds the data/ota partition (add_otadata); fill it with write_otadata(). The fake's
    # set_boot and mark_app_valid_cancel_rollback do not touch it.
    ota0 = Slot("ota_0", slot_size, 0x10000, 0x10)
    ota1 = Slot("ota_1", slot_size, 0x10000 + slot_size, 0x11)
    for slot in (ota0, ota1):
        slot.data[:] = pattern(slot_size, seed=7)
    esp = FakeEsp32([ota0, ota1], running=running, **kw)
    if otadata:
        add_otadata(esp)
    return esp


def put(writer, data):
    # What fetch.py does with an ota.writer.SlotWriter: read into its free space, then commit.
    # Returns len(data). Raises as commit() (too_large once past the slot).
    data = memoryview(data)
    done = 0
    while done < len(data):
        free = writer.free_space()
        n = min(len(free), len(data) - done)
        free[:n] = data[done:done + n]
        writer.commit(n)
        done += n
    return done


def body_of(resp, size=64):
    # The whole body of an ota.http_response.Response, read as fetch.py reads it: readinto a buffer.
    out = bytearray()
    buf = bytearray(size)
    while True:
        n = resp.readinto(buf)
        if n == 0:
            return bytes(out)
        out += buf[:n]


def add_otadata(esp):
    # The data/ota partition, erased, first in the table (as in partitions.csv).
    esp.slots["otadata"] = Slot("otadata", 2 * SECTOR, 0xD000, 0x00, type_=1)
    esp.order.insert(0, "otadata")
    return esp


OTA_STATES = {"NEW": 0, "PENDING_VERIFY": 1, "VALID": 2, "INVALID": 3, "ABORTED": 4, "UNDEFINED": 0xFFFFFFFF}


def otadata_crc(seq):
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


def write_otadata(esp, sector, seq, state, crc=None):
    # Erases otadata sector 0 or 1 and programs one 32-byte entry (docs/CHIP.md §2): seq, 20 x 0xFF,
    # state (a name of OTA_STATES or an int), crc (default: the right one). seq None: leave it erased.
    slot = esp.slots["otadata"]
    slot.erase(sector * SECTOR)
    if seq is None:
        return
    state = OTA_STATES.get(state, state)
    crc = otadata_crc(seq) if crc is None else crc
    slot.program(sector * SECTOR, struct.pack("<I", seq) + b"\xff" * 20 + struct.pack("<II", state, crc))


def otadata_after(esp, sector0, sector1):
    # Both otadata sectors written, each as (seq, state) of write_otadata, then read the way the agent
    # reads them (ota.otadata.read): {slot: state}.
    from ota import otadata

    write_otadata(esp, 0, *sector0)
    write_otadata(esp, 1, *sector1)
    return otadata.read(esp)


# ---------------------------------------------------------------- HTTPS server and https.open

class FakeResponse:
    # One connection's body. drop_after: bytes into this body after which readinto raises `drop`
    # (after scribbling over the caller's buffer, as a real read that died part-way may do).
    def __init__(self, body, status, range_start, total, drop_after=None, drop=None, max_read=None):
        self.body = memoryview(body)
        self.status = status
        self.range_start = range_start
        self.total = total
        self.length = len(body)
        self.chunked = False
        self.pos = 0
        self.drop_after = drop_after
        self.drop = drop
        self.max_read = max_read
        self.closed = False
        self.reads = 0

    def readinto(self, buf):
        self.reads += 1
        if self.drop_after is not None and self.pos >= self.drop_after:
            memoryview(buf)[: min(len(buf), 7)] = b"garbage"[: min(len(buf), 7)]
            raise self.drop
        n = min(len(buf), len(self.body) - self.pos)
        if self.max_read:
            n = min(n, self.max_read)
        if self.drop_after is not None:
            n = min(n, self.drop_after - self.pos)
        memoryview(buf)[:n] = self.body[self.pos:self.pos + n]
        self.pos += n
        return n

    def close(self):
        self.closed = True


class FakeServer:
    # Serves `content`. plans: one dict per connection, in order (later connections: {}):
    #   ignore_range: answer 200 with the whole file even to a Range request
    #   drop_after, drop: break the body after n bytes with that exception (default connection_lost)
    #   fail: raise this exception from open()
    #   max_read: short reads;  total: lie about the size;  range_start: lie about the 206 start
    def __init__(self, content, plans=(), max_read=None):
        self.content = content
        self.plans = list(plans)
        self.max_read = max_read
        self.opens = []  # (url, start, kwargs)
        self.responses = []

    @staticmethod
    def reason(error):
        # The real module's naming of a readinto OSError (pure: no socket involved).
        from ota import https

        return https.reason(error)

    def open(self, url, ca_path="ca.der", token=None, token_origin=None, start=0, allow_http=False,
             connect_timeout=10, read_timeout=10, max_redirects=5, headers=None, tls_context=None, line=None):
        plan = self.plans.pop(0) if self.plans else {}
        self.opens.append((url, start, {"token": token, "ca_path": ca_path, "tls_context": tls_context}))
        if "fail" in plan:
            raise plan["fail"]
        size = len(self.content)
        if start and not plan.get("ignore_range"):
            if plan.get("range_start", start) != start:  # as http_response.Response refuses it
                raise OtaError("bad_response", "asked for byte %d, got %d" % (start, plan["range_start"]))
            resp = FakeResponse(self.content[start:], 206, plan.get("range_start", start),
                                plan.get("total", size), max_read=self.max_read)
        else:
            resp = FakeResponse(self.content, 200, None, plan.get("total", size), max_read=self.max_read)
        if "drop_after" in plan:
            resp.drop_after = plan["drop_after"]
            resp.drop = plan.get("drop", OtaError("connection_lost", "peer closed"))
        self.responses.append(resp)
        return resp


def fat_rename(monkeypatch, os_module):
    # os_module.rename (the os a device module imported) refusing an existing target, as FAT's does.
    real_rename = os.rename

    def rename(src, dst):
        if os.path.exists(dst):
            raise OSError(17, "EEXIST")
        real_rename(src, dst)

    monkeypatch.setattr(os_module, "rename", rename)
