# Issue 13, the data path on a diet: one buffer (headers read into the chunk buffer), one SSLContext per
# update, TCP_NODELAY, the trigger's sha256 proven by the read-back instead of a streaming hash, the
# admission check on the chip's split heap, and the image checksum's bytecode path for a firmware
# without the native emitter. Numbers are `make bench`'s (bench/diet_bench.py), never asserted here.
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys

import pytest

import fakes
from paths import ROOT
from ota import heap, http_response, https, update
from ota.errors import OtaError

SLOT = 0x40000
URL = "https://fw.example/fw.bin"
FAST = {"retry_backoff_ms": 0, "progress_bytes": 8192}
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
LIB = os.path.join(ROOT, "lib")


def make_image(version="1.1.0", size=48000):
    from devkit.images import build_image

    return build_image(version, size=size)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def run(server, esp=None, **kw):
    esp = esp or fakes.make_device(SLOT)
    result = update.run(URL, config=dict(FAST), https=server, esp32=esp, running="1.0.0",
                        running_project="micropython", **kw)
    return result, esp


def micropython(script, *args, heap_size="64wK"):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no .venv/bin/micropython")
    out = subprocess.run([MICROPYTHON, "-X", "heapsize=" + heap_size, "-c", script] + list(args),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


# ---------------------------------------------------------------- one buffer, one context

class Stream(io.BytesIO):
    def readinto(self, buf, n=None):
        view = memoryview(buf)
        return super().readinto(view if n is None else view[:n])


def test_headers_are_read_into_the_buffer_given_and_the_body_is_left_alone():
    head = b"HTTP/1.1 200 OK\r\nX-Long: " + b"y" * 1500 + b"\r\nContent-Length: 5\r\n\r\n"
    stream = Stream(head + b"abcde")
    buf = bytearray(4096)
    status, fields = http_response.read_head(stream, memoryview(buf))
    assert (status, fields) == (200, {"content-length": "5"})
    assert bytes(buf[:2]) == b"\r\n" and b"y" * 1000 in buf  # the lines went through the buffer given
    assert stream.read() == b"abcde"  # not one body byte read ahead


def test_a_buffer_shorter_than_a_header_line_is_not_used():
    # A resume whose buffer keeps more than 2 KiB unflushed: read_head makes its own line, so the
    # bytes kept are not overwritten and the 2 KiB line limit stays the same.
    kept = bytearray(b"k" * 4096)
    line = memoryview(kept)[3000:]
    stream = Stream(b"HTTP/1.1 206 P\r\nLocation: /" + b"z" * 1900 + b"\r\n\r\n")
    assert http_response.read_head(stream, line)[0] == 206
    assert kept == b"k" * 4096


def test_head_into_the_chunk_buffer_allocates_no_line_on_micropython():
    # MicroPython's socket readline(limit) allocates a `limit`-byte buffer per line: 2 KiB per header
    # line before issue 13. Into the chunk buffer, the head costs its small copies only.
    script = r"""
import sys, io, micropython, gc
sys.path.insert(0, sys.argv[1])
from ota import http_response
head = b"HTTP/1.1 206 Partial Content\r\nServer: nginx\r\nContent-Type: application/octet-stream\r\n" \
       b"Content-Length: 100\r\nContent-Range: bytes 0-99/100\r\nConnection: close\r\n\r\n"
buf = bytearray(4096)
view = memoryview(buf)
for line in (view, None):
    stream = io.BytesIO(head)
    gc.collect()
    before = micropython.mem_total()
    http_response.read_head(stream, line)
    print(micropython.mem_total() - before)
"""
    into, alone = [int(x) for x in micropython(script, LIB).split()]
    lines = 7
    assert into < lines * 700 and alone - into > 1024, (into, alone)  # small copies, no 2 KiB line


class RecordingServer(fakes.FakeServer):
    # Records the context and the header buffer each connection is given; answers with a context of
    # its own, as https.open does when it made one.
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.given = []

    def open(self, url, tls_context=None, line=None, **kw):
        self.given.append((tls_context, line))
        resp = super().open(url, **kw)
        resp.tls_context = tls_context or object()
        return resp


def test_one_context_per_update_reused_by_every_resume():
    img = make_image()
    server = RecordingServer(img, plans=[{"drop_after": 5000}, {"drop_after": 9000}, {}])
    result, _ = run(server, sha256=sha(img))
    assert result["result"] == "ok" and len(server.given) == 3
    first = server.given[0][0]
    made = server.responses[0].tls_context
    assert first is None and made is not None
    assert [given[0] for given in server.given[1:]] == [made, made]


def test_headers_go_into_the_free_part_of_the_chunk_buffer():
    img = make_image()
    server = RecordingServer(img, plans=[{"drop_after": 5000}, {}])
    run(server, sha256=sha(img))
    lines = [given[1] for given in server.given]
    assert [len(line) for line in lines] == [4096, 4096 - (5000 - 4096)]  # the rest after the kept bytes
    assert all(isinstance(line, memoryview) for line in lines)


def test_tcp_nodelay_is_set_where_the_socket_module_has_it():
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        stream = https._connect("127.0.0.1", listener.getsockname()[1], 5, 5, None)
        try:
            assert stream._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            stream.close()
    finally:
        listener.close()


def test_the_simulated_socket_has_the_esp32_ports_constants():
    script = r"""
import sys
sys.path.insert(0, sys.argv[1])
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.close()
print(socket.IPPROTO_TCP, socket.TCP_NODELAY, hasattr(socket, "getaddrinfo"))
"""
    assert micropython(script, os.path.join(ROOT, "sim", "device")).split() == ["6", "1", "True"]


# ---------------------------------------------------------------- hash passes

def count_reads(esp, label="ota_1"):
    reads = []
    real = esp.Partition.readblocks

    def readblocks(self, block, buf, offset=0):
        if self.info()[4] == label:
            reads.append(len(buf))
        return real(self, block, buf, offset)

    esp.Partition.readblocks = readblocks
    return reads


def test_the_trigger_sha256_is_proven_by_one_read_back_pass():
    img = make_image()
    esp = fakes.make_device(SLOT)
    reads = count_reads(esp)
    result, _ = run(fakes.FakeServer(img), esp=esp, sha256=sha(img))
    assert result["sha256"] == sha(img) and esp.boot == "ota_1"
    assert sum(reads) == (len(img) + 4095) // 4096 * 4096  # the slot read once


def test_a_wrong_file_is_bad_sha256_after_one_read_back():
    img = make_image()
    esp = fakes.make_device(SLOT)
    reads = count_reads(esp)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(img), esp=esp, sha256="ab" * 32)
    assert e.value.reason == "bad_sha256" and esp.boot == "ota_0"
    assert sum(reads) == (len(img) + 4095) // 4096 * 4096  # told from a flash fault in the same pass
    assert esp.slots["ota_1"].data[:4096] == b"\xff" * 4096


def test_a_flash_that_loses_a_bit_is_readback_mismatch_with_a_trigger_sha256(monkeypatch):
    real_program = fakes.Slot.program

    def flaky(self, addr, buf):
        real_program(self, addr, buf)
        if addr == 4096:
            self.data[addr + 5] &= 0xFE if self.data[addr + 5] & 1 else 0xFD

    monkeypatch.setattr(fakes.Slot, "program", flaky)
    img = make_image()
    esp = fakes.make_device(SLOT)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(img), esp=esp, sha256=sha(img))
    assert e.value.reason == "readback_mismatch"
    assert esp.boot == "ota_0" and esp.slots["ota_1"].set_boot_calls == 0


def test_a_corrupt_download_is_named_by_the_image_checks_before_any_read_back():
    # The streamed checksum refuses it at the end of the download, before the slot is read back.
    img = bytearray(make_image())
    good = sha(bytes(img))
    img[3000] ^= 0x55
    esp = fakes.make_device(SLOT)
    reads = count_reads(esp)
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(bytes(img)), esp=esp, sha256=good)
    assert e.value.reason == "bad_checksum" and reads == []


def test_a_wrong_appended_hash_is_bad_image_hash_from_the_read_back():
    # The image's own SHA-256 is checked over the flash; the slot holds what came, so it is the file's
    # fault, not readback_mismatch.
    img = bytearray(make_image())
    img[-1] ^= 0x01  # the last byte of the appended SHA-256
    with pytest.raises(OtaError) as e:
        run(fakes.FakeServer(bytes(img)), sha256=sha(bytes(img)))
    assert e.value.reason == "bad_image_hash"


def test_no_sha256_is_computed_while_streaming(monkeypatch):
    # The streaming path makes no hashlib.sha256: both hashes run on the read-back (2 passes, not 3).
    made = []
    real_sha256 = hashlib.sha256

    class Counting:
        def __init__(self, data=b""):
            made.append(sys._getframe(1).f_globals["__name__"])
            self._h = real_sha256(data)

        def update(self, data):
            self._h.update(data)

        def digest(self):
            return self._h.digest()

        def hexdigest(self):
            return self._h.hexdigest()

    img = make_image()
    digest = sha(img)
    monkeypatch.setattr(hashlib, "sha256", Counting)  # the one hashlib of update.py and image_verify.py
    result, _ = run(fakes.FakeServer(img), sha256=digest)
    device = [name for name in made if name.startswith("ota.")]  # not the fake bootloader's
    assert device == ["ota.update", "ota.image_verify"]  # the file's and the image's: the read-back
    monkeypatch.undo()
    assert result["sha256"] == digest


def test_update_with_a_trigger_sha256_allocates_nothing_per_chunk(tmp_path):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no .venv/bin/micropython")
    img = make_image("1.2.0", size=1024 * 1024)
    (tmp_path / "img.bin").write_bytes(img)
    (tmp_path / "slot.bin").write_bytes(b"\xff" * 0x1D0000)
    out = subprocess.run([MICROPYTHON, "-X", "heapsize=64wK", os.path.join(ROOT, "host_tests", "drivers", "mp_alloc.py"),
                          LIB, str(tmp_path / "img.bin"), str(tmp_path / "slot.bin"), "update", sha(img)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    fields = dict(item.split("=") for item in out.stdout.split()[1:])
    assert fields["ok"] == "1" and fields["steady_max"] == "0", fields


# ---------------------------------------------------------------- the admission check

def test_on_the_chip_the_gc_shortfall_must_fit_beside_the_tls_session(monkeypatch):
    # gc.mem_free() on the chip = the GC heap's free bytes + the largest free IDF block, which the GC
    # heap grows into and the TLS session needs too (MP py/modgc.c, ports/esp32/gccollect.c).
    monkeypatch.setattr(heap, "_GROWS", True)
    largest = 60000
    esp = fakes.FakeEsp32({}, heap_regions=[(200000, 90000, largest, 50000)])
    monkeypatch.setattr(heap.gc, "mem_free", lambda: 2000 + largest, raising=False)
    heap.check(2000 + largest - heap.TLS_BYTES, esp32=esp)  # the GC grows by what the session leaves
    with pytest.raises(OtaError) as e:
        heap.check(2000 + largest - heap.TLS_BYTES + 1, esp32=esp)
    assert e.value.reason == "low_memory" and "for TLS" in e.value.detail
    monkeypatch.setattr(heap, "_GROWS", False)  # the simulator: a fixed GC heap, free is its own
    heap.check(2000 + largest, esp32=esp)


def test_default_admission_threshold_is_below_the_old_guess():
    from ota.config import DEFAULTS

    assert 0 < DEFAULTS["ota"]["min_free"] < 16384


# ---------------------------------------------------------------- the checksum without native code

XOR_SCRIPT = r"""
import sys, gc, micropython
sys.path.insert(0, sys.argv[1])
from ota import image_verify
print("chosen", "bytecode" if image_verify._xor is image_verify._xor_bytecode else "native")
buf = bytearray((i * 7 + 3) & 0xFF for i in range(4096))
ok = True
if image_verify._xor is not image_verify._xor_bytecode:
    # every path of the native loop: 32-byte turns, 0..31 tail bytes, a start off a word boundary
    for start, end in ((0, 4096), (1, 4095), (3, 10), (5, 5), (2, 4093), (0, 31), (1, 33), (0, 4092), (4, 68)):
        ok = ok and image_verify._xor(buf, start, end, 0xEF) == image_verify._xor_bytecode(buf, start, end, 0xEF)
def alloc(f, buf):
    f(buf, 1, 4095, 0xEF)
    gc.collect()
    before = micropython.mem_total()
    for i in range(8):
        f(buf, 1, 4095, 0xEF)
    return micropython.mem_total() - before
print("alloc", alloc(image_verify._xor_bytecode, buf), "same", int(ok))
v = image_verify.Verifier(None)
data = open(sys.argv[2], "rb").read()
view = memoryview(data)
for at in range(0, len(data), 4096):
    v.feed(view[at:at + 4096])
try:
    v.finish()
    print("verify ok")
except Exception as e:
    print("verify", e.reason)
"""


@pytest.mark.parametrize("native", [True, False])
def test_image_checksum_with_and_without_the_native_emitter(tmp_path, native):
    lib = tmp_path / "lib"
    shutil.copytree(LIB, lib)
    if not native:  # what importing the viper module does on a firmware without the RISC-V emitter
        (lib / "ota" / "xor_viper.py").write_text('raise ValueError("native code in .mpy unsupported")\n')
    img = bytearray(make_image(size=60000))
    (tmp_path / "good.bin").write_bytes(img)
    img[5000] ^= 0x01  # checksum and hash break
    (tmp_path / "bad.bin").write_bytes(img)
    good = micropython(XOR_SCRIPT, str(lib), str(tmp_path / "good.bin")).split("\n")
    bad = micropython(XOR_SCRIPT, str(lib), str(tmp_path / "bad.bin")).split("\n")
    assert good[0] == "chosen " + ("native" if native else "bytecode")
    assert good[1] == "alloc 0 same 1"
    assert good[2] == "verify ok" and bad[2] in ("verify bad_checksum", "verify bad_image_hash")


def test_the_context_is_made_with_the_buffer_before_the_download():
    # update.run makes the update's one SSLContext right after the chunk buffer, while the heap's
    # top is in one piece, and every connection gets it.
    made = []

    class WithContext(RecordingServer):
        @staticmethod
        def context(ca_path):
            made.append(ca_path)
            return "the-context"

    img = make_image()
    server = WithContext(img, plans=[{"drop_after": 5000}, {}])
    result, _ = run(server, sha256=sha(img))
    assert result["result"] == "ok" and made == ["ca.der"]
    assert [given[0] for given in server.given] == ["the-context", "the-context"]


# ---------------------------------------------------------------- the workspace (third pass)

def test_on_micropython_the_workspace_lends_its_context_and_buffer_and_the_update_allocates_less(tmp_path):
    # MicroPython's own ssl makes the workspace's context from a real CA; the update with the
    # workspace makes no context (https.context is never called) and gives its connection the
    # workspace's; it allocates at least the buffer and the SSLContext less than the same update
    # without a workspace (which makes exactly one context of its own).
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no .venv/bin/micropython")
    from devkit.tls import make_pki

    pki = make_pki(str(tmp_path / "pki"))
    img = make_image("1.2.0", size=64 * 1024)
    (tmp_path / "img.bin").write_bytes(img)
    (tmp_path / "slot.bin").write_bytes(b"\xff" * 0x1D0000)
    out = subprocess.run([MICROPYTHON, "-X", "heapsize=256wK", os.path.join(ROOT, "host_tests", "drivers", "mp_workspace.py"),
                          LIB, str(tmp_path / "img.bin"), str(tmp_path / "slot.bin"), pki.ca_der, sha(img)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    fields = dict(item.split("=") for item in out.stdout.split()[1:])
    assert fields["context"] == "SSLContext" and fields["ok"] == "2", fields
    assert fields["contexts_made"] == "1" and fields["reused"] == "1", fields
    assert int(fields["without"]) - int(fields["with"]) >= 4096 + 1024, fields
