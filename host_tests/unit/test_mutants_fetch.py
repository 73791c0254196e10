"""ota.fetch.Download: the resume loop's counts and bounds, each at its limit and one past (pinned
after `make mutate`, issue 15): how many connections, which byte each asks for, the backoff
between them, the heap asked for before each, the progress reports, the deadline. CPython with a
scripted https module, the real SlotWriter on the fake NOR partition and a recording sink."""
import errno

import pytest

import fakes
from ota import fetch
from ota.config import DEFAULTS
from ota.errors import OtaError
from ota.http_response import HEADER_LINE
from ota.writer import SlotWriter

SLOT = 16 * 4096


class Resp:
    def __init__(self, body, status=200, total=None, cut=None, error=None, ctx=None):
        self.body, self.status, self.total = body, status, total
        self.cut, self.error = cut, error  # after `cut` bytes: raise error (None: the body ends there)
        self.pos = 0
        self.closed = False
        self.tls_context = ctx

    def readinto(self, buf):
        end = len(self.body) if self.cut is None else self.cut
        if self.pos >= end:
            if self.error is not None:
                raise self.error
            return 0
        n = min(len(buf), end - self.pos)
        buf[:n] = self.body[self.pos:self.pos + n]
        self.pos += n
        return n

    def close(self):
        self.closed = True


class Https:
    # open() answers with the next item of `answers`: an exception to raise, or a function
    # start -> Resp. Records each call's start, tls_context and line buffer.
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def open(self, url, start=0, tls_context=None, line=None, **kw):
        self.calls.append({"start": start, "tls_context": tls_context, "line": line, "kw": kw})
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer(start)

    @staticmethod
    def reason(e):
        from ota import https

        return https.reason(e)


class Sink:
    def __init__(self, writer, stop_at=None):
        self.writer = writer
        self.fed = bytearray()
        self.restarts = 0
        self.stop_at = stop_at

    def feed(self, data, n):
        assert len(data) == n
        if self.stop_at is not None and len(self.fed) + n >= self.stop_at:
            return True
        self.fed += data
        self.writer.commit(n)
        return False

    def restart(self):
        self.restarts += 1
        self.fed = bytearray()
        self.writer.restart()


def cfg(**kw):
    c = dict(DEFAULTS["ota"])
    c.update({"retry_backoff_ms": 0, "progress_bytes": 4096})
    c.update(kw)
    return c


def setup(answers, size=None, buf=4096, progress=None, feed=None, open_args=None, **config):
    esp = fakes.make_device(SLOT)
    running = esp.Partition(esp.Partition.RUNNING)
    writer = SlotWriter(esp.Partition("ota_1"), bytearray(buf), running.info())
    https = Https(answers)
    d = fetch.Download("https://fw.example/a", size, cfg(**config), https, esp, progress,
                       open_args or {"token": None}, feed)
    return d, writer, Sink(writer), https, esp


def whole(data, **kw):
    return lambda start: Resp(data[start:], 206 if start else 200, kw.pop("total", len(data)), **kw)


def reason(call, *args):
    with pytest.raises(OtaError) as e:
        call(*args)
    return e.value.reason


DATA = fakes.pattern(10000, seed=11)


@pytest.fixture
def pauses(monkeypatch):
    made = []
    monkeypatch.setattr(fetch, "_pause", lambda ms, feed: made.append(ms))
    return made


def test_backoff_doubles_up_to_32_times(pauses):
    d, w, sink, https, _ = setup([OtaError("timeout", "t")] * 9, retries=8, retry_backoff_ms=10)
    assert reason(d.run, w, sink) == "timeout"
    assert len(https.calls) == 9  # the first try and 8 retries
    assert pauses == [10, 20, 40, 80, 160, 320, 320, 320]


def test_retries_bound_exactly(pauses):
    # `retries` reconnects without a new byte are allowed; the one after them fails
    d, w, sink, https, _ = setup([OtaError("connection_lost", "x")] * 3 + [whole(DATA)], retries=3)
    assert d.run(w, sink) is False and bytes(sink.fed) == DATA
    d, w, sink, https, _ = setup([OtaError("connection_lost", "x")] * 4 + [whole(DATA)], retries=3)
    assert reason(d.run, w, sink) == "connection_lost" and len(https.calls) == 4


def test_progress_resets_the_failure_count(pauses):
    # each connection brings new bytes, then drops: with retries=1 it still completes
    drop = OSError(errno.ECONNRESET)
    answers = [lambda s, c=c: Resp(DATA[s:], 206 if s else 200, len(DATA), cut=c - s, error=drop)
               for c in (3000, 6000, 9000)] + [whole(DATA)]
    d, w, sink, https, _ = setup(answers, retries=1, retry_backoff_ms=7)
    assert d.run(w, sink) is False and bytes(sink.fed) == DATA
    assert [c["start"] for c in https.calls] == [0, 3000, 6000, 9000]
    assert pauses == [7, 7, 7]  # failures back at 1 each time: the base backoff


def test_backoff_after_progress_starts_again_from_the_base(pauses):
    drop = OSError(errno.ECONNRESET)
    answers = [OtaError("timeout", "t"), OtaError("timeout", "t"),
               lambda s: Resp(DATA, 200, len(DATA), cut=4000, error=drop),
               OtaError("timeout", "t"), whole(DATA)]
    d, w, sink, https, _ = setup(answers, retries=3, retry_backoff_ms=5)
    assert d.run(w, sink) is False
    assert pauses == [5, 10, 5, 10]


def test_enomem_mid_body_is_low_memory_without_a_retry(pauses):
    answers = [lambda s: Resp(DATA, 200, len(DATA), cut=5000, error=OSError(errno.ENOMEM))] + [whole(DATA)]
    d, w, sink, https, _ = setup(answers)
    assert reason(d.run, w, sink) == "low_memory" and len(https.calls) == 1 and pauses == []


@pytest.mark.parametrize("error,expected", [(OSError(errno.ETIMEDOUT), "timeout"),
                                            (OSError(errno.ECONNRESET), "connection_lost")])
def test_a_socket_error_mid_body_is_named_and_resumed(pauses, error, expected):
    answers = [lambda s: Resp(DATA, 200, len(DATA), cut=5000, error=error)] * 3
    d, w, sink, https, _ = setup(answers, retries=1)
    https.answers[1] = lambda s: Resp(DATA[s:], 206, len(DATA), cut=0, error=error)
    assert reason(d.run, w, sink) == expected
    assert [c["start"] for c in https.calls] == [0, 5000]


@pytest.mark.parametrize("failure", ["bad_response", "http_500", "too_many_redirects", "tls_verify_failed"])
def test_a_failure_that_is_not_the_link_is_never_retried_mid_body(pauses, failure):
    answers = [lambda s: Resp(DATA, 200, len(DATA), cut=5000, error=OtaError("connection_lost", "x")),
               OtaError(failure, "x"), whole(DATA)]
    d, w, sink, https, _ = setup(answers)
    assert reason(d.run, w, sink) == failure and len(https.calls) == 2


@pytest.mark.parametrize("failure", ["connect_failed", "dns_failed", "tls_failed", "timeout", "connection_lost"])
def test_link_failures_after_the_first_byte_are_retried(pauses, failure):
    answers = [lambda s: Resp(DATA, 200, len(DATA), cut=5000, error=OtaError("connection_lost", "x")),
               OtaError(failure, "x"), whole(DATA)]
    d, w, sink, https, _ = setup(answers)
    assert d.run(w, sink) is False and bytes(sink.fed) == DATA
    assert [c["start"] for c in https.calls] == [0, 5000, 5000]


def test_a_body_shorter_than_its_total_is_resumed(pauses):
    answers = [lambda s: Resp(DATA[:6000], 200, len(DATA)), whole(DATA)]
    d, w, sink, https, _ = setup(answers)
    assert d.run(w, sink) is False and bytes(sink.fed) == DATA
    assert [c["start"] for c in https.calls] == [0, 6000]
    d, w, sink, https, _ = setup([lambda s: Resp(DATA[:6000], 200, len(DATA))] * 2, retries=1)
    https.answers[1] = lambda s: Resp(b"", 206, len(DATA))
    assert reason(d.run, w, sink) == "truncated"


def test_total_against_the_slot_and_the_trigger():
    d, w, sink, _, _ = setup([whole(fakes.pattern(SLOT))])  # exactly the slot: fine
    assert d.run(w, sink) is False and d.total == SLOT
    d, w, sink, _, _ = setup([lambda s: Resp(b"", 200, SLOT + 1)])
    assert reason(d.run, w, sink) == "too_large"
    d, w, sink, _, _ = setup([whole(DATA)], size=len(DATA) + 1)
    assert reason(d.run, w, sink) == "size_mismatch"
    d, w, sink, _, _ = setup([lambda s: Resp(DATA, 200, None)], size=None)  # no total: to the end
    assert d.run(w, sink) is False and d.total is None and bytes(sink.fed) == DATA


def test_restarts_bound_exactly(pauses):
    drop = OtaError("connection_lost", "x")
    cut = lambda s: Resp(DATA, 200, len(DATA), cut=5000, error=drop)  # noqa: E731  200, also to a Range
    # the first answer is no restart; each later 200 is one: max_restarts of them are allowed
    d, w, sink, https, _ = setup([cut] * 2 + [lambda s: Resp(DATA, 200, len(DATA))], max_restarts=2)
    assert d.run(w, sink) is False and bytes(sink.fed) == DATA
    assert sink.restarts == 2 and d.restarts == 2
    d, w, sink, https, _ = setup([cut] * 3 + [lambda s: Resp(DATA, 200, len(DATA))], max_restarts=2)
    assert reason(d.run, w, sink) == "too_many_restarts" and d.restarts == 3 and len(https.calls) == 4


def test_a_200_to_the_first_request_is_no_restart():
    d, w, sink, _, _ = setup([whole(DATA)], max_restarts=0)
    assert d.run(w, sink) is False and sink.restarts == 0 and d.restarts == 0


def test_the_sink_stops_the_download():
    d, w, sink, https, _ = setup([whole(DATA)])
    sink.stop_at = 4096
    assert d.run(w, sink) is True and len(https.calls) == 1


def test_heap_asked_before_each_reconnect(pauses, monkeypatch):
    asked = []
    monkeypatch.setattr(fetch.heap, "check", lambda need, esp32=None: asked.append(need))
    drop = OtaError("connection_lost", "x")
    # 8 KiB buffer: after 5000 bytes kept, 3192 free (>= 2048, no extra); after 7000, 1192 (< 2048)
    answers = [lambda s: Resp(DATA, 200, len(DATA), cut=5000, error=drop),
               lambda s: Resp(DATA[s:], 206, len(DATA), cut=2000, error=drop), whole(DATA)]
    d, w, sink, https, _ = setup(answers, buf=8192, min_free=1000)
    assert d.run(w, sink) is False
    assert asked == [1000, 1000 + HEADER_LINE]
    # the line buffer handed to open is the buffer's free part
    assert [len(c["line"]) for c in https.calls] == [8192, 8192 - 5000, 8192 - 7000]


def test_heap_checked_every_64_kib_of_stream(monkeypatch):
    checks = []
    monkeypatch.setattr(fetch.heap, "check_stream", lambda need: checks.append(need))
    data = fakes.pattern(SLOT, seed=2)
    d, w, sink, _, _ = setup([whole(data)], min_free=1234)
    assert d.run(w, sink) is False
    assert checks == [1234]  # at 65536 bytes, once
    d, w, sink, _, _ = setup([whole(data[:65535])])
    checks.clear()
    assert d.run(w, sink) is False and checks == []


def test_progress_reports(pauses):
    seen = []
    data = fakes.pattern(20000, seed=3)
    d, w, sink, _, _ = setup([whole(data)], progress=lambda n, total: seen.append((n, total)),
                             progress_bytes=8192)
    assert d.run(w, sink) is False
    assert seen == [(4096, 20000), (12288, 20000), (20000, 20000)]
    seen.clear()
    d, w, sink, _, _ = setup([lambda s: Resp(data, 200, None)], progress=lambda n, t: seen.append((n, t)),
                             progress_bytes=16384)
    assert d.run(w, sink) is False
    assert seen == [(4096, None), (20000, None)]


def test_progress_after_a_restart_from_zero(pauses):
    seen = []
    drop = OtaError("connection_lost", "x")
    answers = [lambda s: Resp(DATA, 200, len(DATA), cut=9000, error=drop), lambda s: Resp(DATA, 200, len(DATA))]
    d, w, sink, _, _ = setup(answers, progress=lambda n, t: seen.append(n), progress_bytes=8192)
    assert d.run(w, sink) is False
    assert seen == [4096, 4096, 10000]  # reported from byte 0 again after the restart


def test_tls_context_given_and_kept(pauses):
    ctx = object()
    drop = OtaError("connection_lost", "x")
    answers = [lambda s: Resp(DATA, 200, len(DATA), cut=5000, error=drop), whole(DATA)]
    d, w, sink, https, _ = setup(answers, open_args={"token": "t", "tls_context": ctx})
    assert d.run(w, sink) is False
    assert [c["tls_context"] for c in https.calls] == [ctx, ctx]
    assert https.calls[0]["kw"] == {"token": "t"}
    made = object()
    answers = [lambda s: Resp(DATA, 200, len(DATA), cut=5000, error=drop, ctx=made), whole(DATA)]
    d, w, sink, https, _ = setup(answers)
    assert d.run(w, sink) is False
    assert [c["tls_context"] for c in https.calls] == [None, made]  # the first one's, for the next


def test_deadline_exactly(monkeypatch, pauses):
    now = [0]
    monkeypatch.setattr(fetch, "ticks_ms", lambda: now[0])
    d, w, sink, https, _ = setup([OtaError("timeout", "t")] * 3, download_deadline_s=10, retries=5)
    now[0] = 10000
    d._check_deadline()  # exactly the deadline: still allowed
    now[0] = 10001
    assert reason(d._check_deadline) == "download_deadline"
    now[0] = 10000  # the first connection fails at the deadline; its backoff pause passes it
    monkeypatch.setattr(fetch, "_pause", lambda ms, feed: now.__setitem__(0, now[0] + 1))
    assert reason(d.run, w, sink) == "download_deadline" and len(https.calls) == 1


def test_pause_feeds_the_watchdog_each_second(monkeypatch):
    class Clock:
        slept = []

        @staticmethod
        def sleep_ms(ms):
            Clock.slept.append(ms)

    monkeypatch.setattr(fetch, "time", Clock)
    fed = []
    fetch._pause(2500, lambda: fed.append(1))
    assert Clock.slept == [1000, 1000, 500] and len(fed) == 3
    Clock.slept.clear()
    fetch._pause(1000, lambda: fed.append(1))
    assert Clock.slept == [1000]
    fetch._pause(0, lambda: fed.append(1))
    assert Clock.slept == [1000] and len(fed) == 4


def test_pause_on_cpython_sleeps_seconds(monkeypatch):
    class Clock:
        slept = []

        @staticmethod
        def sleep(s):
            Clock.slept.append(s)

    monkeypatch.setattr(fetch, "time", Clock)
    fetch._pause(1500, lambda: None)
    assert Clock.slept == [1.0, 0.5]


def test_watchdog_fed_for_every_chunk():
    fed = []
    d, w, sink, _, _ = setup([whole(DATA)], feed=lambda: fed.append(1))
    assert d.run(w, sink) is False
    assert len(fed) == 4  # 3 chunks of the 4 KiB buffer and the read that ends the body


def test_a_read_that_fills_the_buffer_reaches_the_sink_without_a_slice():
    # Zero copy and no allocation per chunk: a read that filled writer.free_space() is handed to the
    # sink as that very view; only a short read is sliced (mutant _stream _13 sliced every read)
    d, w, sink, https, esp = setup([whole(DATA)], size=len(DATA))
    handed = []
    real = sink.feed

    def feed(data, n):
        handed.append((n, data is w.view))
        return real(data, n)

    sink.feed = feed
    assert d.run(w, sink) is False and bytes(sink.fed) == DATA
    assert handed == [(4096, True), (4096, True), (len(DATA) - 8192, False)]


def test_heap_asked_before_a_reconnect_with_exactly_a_header_line_free(pauses, monkeypatch):
    # 8 KiB buffer, 6144 bytes kept: 2048 free, exactly a header line, so read_head reads into it
    # and no extra line buffer is asked for; one byte more kept and it is (mutants run _111, _114:
    # the bound, and the device's esp32 handed to the check)
    asked = []
    monkeypatch.setattr(fetch.heap, "check", lambda need, esp32=None: asked.append((need, esp32)))
    drop = OtaError("connection_lost", "x")
    for kept, extra in ((8192 - HEADER_LINE, 0), (8192 - HEADER_LINE + 1, HEADER_LINE)):
        asked.clear()
        answers = [lambda s, kept=kept: Resp(DATA, 200, len(DATA), cut=kept, error=drop), whole(DATA)]
        d, w, sink, https, esp = setup(answers, buf=8192, min_free=1000)
        assert d.run(w, sink) is False
        assert asked == [(1000 + extra, esp)]


def test_the_stream_checks_the_heap_once_per_64_kib(monkeypatch):
    # check_stream every _HEAP_EVERY bytes, not every chunk (mutant _stream _19 set the next check
    # 64 KiB back: a check on every chunk after the first)
    checks = []
    monkeypatch.setattr(fetch.heap, "check_stream", lambda need: checks.append(need))
    data = fakes.pattern(3 * 65536 + 100, seed=5)
    esp = fakes.make_device(4 * 65536)  # a slot bigger than this file's SLOT: 3 checks' worth
    w = SlotWriter(esp.Partition("ota_1"), bytearray(4096), esp.Partition(esp.Partition.RUNNING).info())
    d = fetch.Download("https://fw.example/a", len(data), cfg(min_free=1000), Https([whole(data)]), esp,
                       None, {"token": None})
    sink = Sink(w)
    assert d.run(w, sink) is False and bytes(sink.fed) == data
    assert checks == [1000, 1000, 1000]  # at 64, 128 and 192 KiB


def test_after_a_200_restart_the_heap_checks_count_from_byte_0_again(pauses, monkeypatch):
    # The server ignored Range and sent the whole file again: the stream's counters start again at
    # byte 0, so the checks fall at 64, 128 and 192 KiB of the new answer (mutant _accept _23 started
    # them at byte 1: a check at 68 KiB, one fewer in all)
    checks = []
    monkeypatch.setattr(fetch.heap, "check_stream", lambda need: checks.append(need))
    monkeypatch.setattr(fetch.heap, "check", lambda need, esp32=None: None)
    data = fakes.pattern(3 * 65536 + 100, seed=6)
    drop = OtaError("connection_lost", "x")
    answers = [lambda s: Resp(data, 200, len(data), cut=5000, error=drop), lambda s: Resp(data, 200, len(data))]
    esp = fakes.make_device(4 * 65536)
    w = SlotWriter(esp.Partition("ota_1"), bytearray(4096), esp.Partition(esp.Partition.RUNNING).info())
    d = fetch.Download("https://fw.example/a", len(data), cfg(min_free=1000), Https(answers), esp,
                       None, {"token": None})
    sink = Sink(w)
    assert d.run(w, sink) is False and d.restarts == 1 and bytes(sink.fed) == data
    assert checks == [1000, 1000, 1000]
