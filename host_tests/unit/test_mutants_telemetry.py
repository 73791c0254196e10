"""ota.telemetry: the numbers an update's final state carries as "t" (README "Per-update telemetry"),
each counted from a scripted clock so that every field has one right value (pinned after `make
mutate`: test_ha_unit.py checks the counts, not each timing, bound and default). CPython."""
import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import state, telemetry


@pytest.fixture
def clock(monkeypatch):
    # ticks_ms as telemetry imported it, advanced by the fakes below: each step takes a known time.
    now = {"ms": 10000}
    monkeypatch.setattr(telemetry, "ticks_ms", lambda: now["ms"])
    return now


class Resp:
    def __init__(self, status=206, left=0, stream=None, **fields):
        self.status, self.left, self.total = status, left, fields.pop("total", 9000)
        self.__dict__.update(fields)
        if stream is not None:
            self._stream = stream
        self.closed = False

    def readinto(self, buf):
        n = min(len(buf), self.left)
        self.left -= n
        return n

    def close(self):
        self.closed = True


class Https:
    # open() takes `cost` ms on the clock; reason() answers what it is asked.
    def __init__(self, clock, answers, cost=30):
        self.clock, self.answers, self.cost, self.opened = clock, list(answers), cost, []

    def open(self, url, start=0, **kwargs):
        self.clock["ms"] += self.cost
        self.opened.append((url, start, kwargs))
        return self.answers.pop(0)

    def reason(self, error):
        return "reason:%s" % error


class Part:
    def __init__(self, clock, write_ms=7, read_ms=3, boot_ms=40):
        self.clock, self.write_ms, self.read_ms, self.boot_ms = clock, write_ms, read_ms, boot_ms
        self.calls = []

    def info(self):
        return ("info",)

    def ioctl(self, op, arg):
        self.calls.append(("ioctl", op, arg))
        return op * 100 + arg

    def writeblocks(self, block, buf):
        self.clock["ms"] += self.write_ms
        self.calls.append(("w", block, len(buf)))

    def readblocks(self, block, buf):
        self.clock["ms"] += self.read_ms
        self.calls.append(("r", block, len(buf)))

    def set_boot(self):
        self.clock["ms"] += self.boot_ms
        self.calls.append(("boot",))


class Wlan:
    def __init__(self, *values):
        self.values = list(values)

    def status(self, what):
        assert what == "rssi"
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if isinstance(value, BaseException):
            raise value
        return value


def test_every_timing_is_counted_from_its_own_start(clock):
    meter = telemetry.Meter("1.1.0")
    https, part = meter.https(Https(clock, [Resp(200, 8192), Resp(206, 100)], cost=30)), meter.partition(Part(clock))
    start = clock["ms"]
    resp = https.open("https://x/fw.bin", start=0, headers=1)
    buf = bytearray(4096)
    while resp.readinto(buf):
        part.writeblocks(1, buf)
    clock["ms"] += 5  # time between chunks is neither a write nor a connection
    resp = https.open("https://x/fw.bin", start=8192)
    resp.readinto(buf)
    clock["ms"] += 100  # download over
    end = clock["ms"]
    part.readblocks(0, buf)
    part.readblocks(1, buf)
    part.set_boot()
    clock["ms"] += 1000  # after the read-back: not part of the download
    f = meter.fields()
    assert f["t_conn_ms"] == 60 and f["t_write_ms"] == 14 and f["t_verify_ms"] == 3 + 3 + 40
    assert f["t_dl_ms"] == end - start  # first connect to the first read-back
    assert (f["t_fetched"], f["t_resumes"], f["t_restarts"]) == (8292, 1, 0) and meter.connects == 2
    assert https.module.opened == [("https://x/fw.bin", 0, {"headers": 1}), ("https://x/fw.bin", 8192, {})]
    assert part.part.calls == [("w", 1, 4096), ("w", 1, 4096), ("r", 0, 4096), ("r", 1, 4096), ("boot",)]


def test_a_download_still_running_is_timed_up_to_now_and_none_before_it_starts(clock):
    meter = telemetry.Meter("1.1.0")
    assert meter.fields()["t_dl_ms"] is None  # never connected
    meter.https(Https(clock, [Resp()], cost=20)).open("https://x/a")
    clock["ms"] += 500
    assert meter.fields()["t_dl_ms"] == 520


def test_the_first_connect_and_the_first_read_back_are_kept(clock):
    meter = telemetry.Meter("1.1.0")
    https = meter.https(Https(clock, [Resp(), Resp()], cost=10))
    https.open("https://x/a")
    first = meter.first
    https.open("https://x/a", start=100)
    assert meter.first == first == 10000
    part = meter.partition(Part(clock, read_ms=5))
    part.readblocks(0, bytearray(4))
    part.readblocks(1, bytearray(4))
    assert meter.last == 10020  # the first read-back's start, not the last's


def test_a_restart_is_a_200_to_a_range_request_only(clock):
    meter = telemetry.Meter("1.1.0")
    https = meter.https(Https(clock, [Resp(200), Resp(206), Resp(200), Resp(200)]))
    https.open("https://x/a")  # 200 to a first request (no start): neither
    assert (meter.resumes, meter.restarts) == (0, 0) and https.module.opened[0][1] == 0
    https.open("https://x/a", start=1)  # 206: a resume
    assert (meter.resumes, meter.restarts) == (1, 0)
    https.open("https://x/a", start=4096)  # 200 to a Range: a resume that restarted
    assert (meter.resumes, meter.restarts) == (2, 1)
    https.open("https://x/a", start=4096)  # and again
    assert (meter.resumes, meter.restarts) == (3, 2)


def test_the_response_carries_the_fields_fetch_reads_and_closes_through(clock):
    meter = telemetry.Meter("1.1.0")
    inner = Resp(206, 10, total=5000, url="https://y/b", length=10, range_start=4990, chunked=True)
    resp = meter.https(Https(clock, [inner])).open("https://x/a", start=4990)
    assert (resp.status, resp.total, resp.url, resp.length, resp.range_start, resp.chunked) == \
        (206, 5000, "https://y/b", 10, 4990, True)
    bare = meter.https(Https(clock, [Resp(200, 0, total=None)])).open("https://x/a")
    assert (bare.url, bare.length, bare.range_start, bare.chunked) == (None, None, None, False)
    resp.close()
    assert inner.closed
    assert meter.https(Https(clock, [])).reason("timeout") == "reason:timeout"


def test_the_wrapper_passes_the_tls_context_both_ways(clock):
    # update.run makes the update's context with the wrapper's context() when the workspace has none;
    # the answer carries the context https.open made (an http URL redirected to https), which
    # fetch.Download keeps for every resume. Neither may be lost in the wrapper.
    meter = telemetry.Meter("1.1.0")

    class Module(Https):
        def context(self, ca_path):
            return "ctx(%s)" % ca_path

    wrapped = meter.https(Module(clock, [Resp(200, 0, tls_context="made-at-the-https-hop"), Resp(200, 0)]))
    assert wrapped.context("ca.der") == "ctx(ca.der)"
    assert wrapped.open("http://x/a").tls_context == "made-at-the-https-hop"
    assert wrapped.open("https://x/a").tls_context is None  # the answer had none
    assert meter.https(Https(clock, [])).context is None  # a module without context(): none


def test_the_raw_stream_marks_the_count_as_unmeasured_only_when_there_is_one(clock):
    meter = telemetry.Meter("1.1.0")
    resp = meter.https(Https(clock, [Resp()])).open("https://x/a")
    assert resp._stream is None and meter.direct is False and meter.fields()["t_fetched"] == 0
    raw = object()
    resp = meter.https(Https(clock, [Resp(stream=raw)])).open("https://x/a")
    assert meter.direct is False  # opened, not yet read raw
    assert resp._stream is raw and meter.direct is True and meter.fields()["t_fetched"] is None


def test_the_slot_passes_info_and_ioctl_through(clock):
    part = Part(clock)
    slot = telemetry.Meter("1.1.0").partition(part)
    assert slot.info() == ("info",) and slot.ioctl(4, 2) == 402 and part.calls == [("ioctl", 4, 2)]


def test_lowest_heap_idf_block_and_rssi(clock, monkeypatch):
    frees = [90000, 70000, 80000]
    monkeypatch.setattr(telemetry.gc, "mem_free", lambda: frees.pop(0), raising=False)

    class Esp32:
        HEAP_DATA = 4

        def __init__(self):
            self.blocks = [60000, 50000, 55000]

        def idf_heap_info(self, caps):
            return [(245760, 100000, self.blocks.pop(0), 0)]

    meter = telemetry.Meter("1.1.0", Esp32(), Wlan(-50, -61, -70, -65))
    assert (meter.heap_min, meter.idf_min, meter.rssi0, meter.rssi_min) == (90000, 60000, -50, -61)
    meter.sample()
    meter.sample()
    f = meter.fields()
    assert (f["t_heap_min"], f["t_idf_min"], f["t_rssi0"], f["t_rssi_min"]) == (70000, 50000, -50, -70)


def test_nothing_to_sample_leaves_the_fields_null(clock, monkeypatch):
    monkeypatch.delattr(telemetry.gc, "mem_free", raising=False)  # CPython: no GC heap to read
    meter = telemetry.Meter("1.1.0")
    meter.sample()
    f = meter.fields()
    assert (f["t_heap_min"], f["t_idf_min"], f["t_rssi0"], f["t_rssi_min"]) == (None, None, None, None)


@pytest.mark.parametrize("error", [OSError(5), ValueError("no rssi"), TypeError("port")])
def test_an_rssi_that_cannot_be_read_is_null_not_a_failed_job(clock, error):
    meter = telemetry.Meter("1.1.0", None, Wlan(error, -60))
    assert meter.rssi0 is None and meter.rssi_min == -60  # the second read (sample) worked


def test_the_low_water_mark_ignores_nothing_and_keeps_the_lowest():
    assert telemetry._low(None, None) is None
    assert telemetry._low(5, None) == 5 and telemetry._low(None, 5) == 5
    assert telemetry._low(5, 4) == 4 and telemetry._low(4, 5) == 4 and telemetry._low(4, 4) == 4


def test_the_record_fields_and_the_artifact(clock, monkeypatch):
    monkeypatch.setattr(state, "unix_time", lambda: 1800000000)
    f = telemetry.Meter("2.0.0", artifact="delta").fields()
    assert (f["t_to"], f["t_art"], f["t_reboot_at"]) == ("2.0.0", "delta", 1800000000)
    assert telemetry.Meter("2.0.0").art == "full"
    assert set(f) == {"t_" + k for k in telemetry.KEYS if k not in ("boot_ms", "reboot_s", "reset")} | {"t_reboot_at"}


def test_confirmed_adds_the_new_images_share(monkeypatch):
    monkeypatch.setattr(state, "unix_time", lambda: 1000)
    assert telemetry.confirmed({"t_reboot_at": 990}, 3, 812) == \
        {"t_boot_ms": 812, "t_reboot_s": 10, "t_reset": "WDT_RESET"}
    # A clock set back across the reboot says 0, not a negative duration.
    assert telemetry.confirmed({"t_reboot_at": 1005}, 1, 0)["t_reboot_s"] == 0
    assert telemetry.confirmed({"t_reboot_at": 1000}, 1, 0)["t_reboot_s"] == 0
    assert telemetry.confirmed({}, 1, 0)["t_reboot_s"] is None  # no clock at the reboot
    monkeypatch.setattr(state, "unix_time", lambda: None)
    assert telemetry.confirmed({"t_reboot_at": 990}, 1, 0)["t_reboot_s"] is None  # none now


def test_reset_names_are_machine_reset_cause_s():
    names = [telemetry.reset_name(c) for c in (1, 2, 3, 4, 5)]
    assert names == ["PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET"]
    assert telemetry.reset_name(9) == 9 and telemetry.confirmed({}, 0, 0)["t_reset"] == 0


def test_the_t_object_has_every_key_in_the_documented_order():
    assert telemetry.KEYS == ("to", "art", "conn_ms", "dl_ms", "write_ms", "verify_ms", "boot_ms", "reboot_s",
                              "fetched", "resumes", "restarts", "heap_min", "idf_min", "rssi0", "rssi_min",
                              "reset")
    record = {"t_to": "1.1.0", "t_conn_ms": 4, "t_reset": "HARD_RESET", "other": 1}
    t = telemetry.record(record)
    assert list(t) == list(telemetry.KEYS)
    assert (t["to"], t["conn_ms"], t["reset"], t["dl_ms"]) == ("1.1.0", 4, "HARD_RESET", None)
    assert telemetry.record({}) is None
