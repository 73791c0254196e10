# Fuzzing the trigger path (the fault-injection matrix, issue "trust and resilience").
#
# (a) lib/ota/trigger.py under CPython with hypothesis: random bytes, random JSON objects over the
#     known keys with values from a pool of awkward ones, and byte-level mutations of valid triggers.
#     Nothing but OtaError may come out, and a result is None or a dict of the documented types.
#     Full form: 120,000 cases; short form: 6,000.
# (b) Random payloads (seeded) published through the real broker to one simulated device running the
#     real agent: no Traceback, the process keeps running (no reboot), it keeps answering (a probe
#     trigger after every batch is answered), and a valid trigger afterwards updates it.
#     Full form: 1,000 payloads; short form: 150.
# Safety: a payload the host parser accepts as a trigger is only sent when its URL names a loopback
# host (the device would connect there); every URL the generators make points at a closed local port.
import hashlib
import json
import os
import random
import time

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from devkit import faultmatrix, simfleet
from devkit.broker import Watcher, find_backend, free_port
from devkit.nginx import find_nginx
from ota import trigger
from ota import url as urls
from ota.errors import OtaError

pytest_plugins = ["devkit.faultmatrix"]

SEED = int(os.environ.get("OTA_FUZZ_SEED", "20240611"))
FULL = faultmatrix.FULL
PARSER_CASES = 120000 if FULL else 6000  # split over the three strategies below
DEVICE_PAYLOADS = 1000 if FULL else 150
BATCH = 50
CLOSED_PORT = free_port()  # nothing listens there: a trigger the device accepts fails at connect
LOOPBACK = ("localhost", "127.0.0.1", "::1")

# --- (a) the parser under CPython --------------------------------------------------------------------
KEYS = ("type", "url", "sha256", "size", "version", "id", "signature", "expires", "target", "allow_downgrade")
GOOD = {"type": "ota_trigger", "url": "https://localhost:%d/fw-1.2.0.bin" % CLOSED_PORT, "sha256": "ab" * 32,
        "size": 1713728, "version": "1.2.0", "id": "job-42", "signature": "c2ln" * 22, "expires": 1767225600,
        "target": "a0b1c2d3e4f5", "allow_downgrade": False}
POOL = [None, True, False, 0, 1, -1, 2 ** 31, 2 ** 63, 2 ** 64 + 1, -2 ** 70, 0.0, 1.5, -0.0, 1e308, float("inf"),
        float("-inf"), float("nan"), "", " ", "x", "ota_trigger", "ota_revert", "OTA_TRIGGER", "ab" * 32, "AB" * 32,
        "ab" * 31 + "zz", "ab" * 33, "1.2.0", "v" * 31, "v" * 32, "1.2.0\n", "j" * 40, "j" * 41, "s" * 256, "s" * 257,
        "t" * 200, "t" * 201, "a,b,c", "*", "\u00e9", "\ud800", "\x00", "\x7f", "caf\u00e9", "\u202e1.2",
        "https://localhost:%d/fw.bin" % CLOSED_PORT, "http://127.0.0.1:%d/fw.bin" % CLOSED_PORT,
        "https://[::1]:%d/a" % CLOSED_PORT, "https://", "https:///x", "https://?x", "https://#", "ftp://localhost/x",
        "https://localhost:%d/a b" % CLOSED_PORT, "https://localhost:%d/\u00e9" % CLOSED_PORT,
        "https://user:pw@localhost/x", "https://localhost:99999/x", "https://localhost:-1/x", "://x", "https:/x",
        "https://localhost:%d/" % CLOSED_PORT + "p" * 600, [], {}, [1, 2], {"a": 1}, [[[[]]]], {"type": "ota_trigger"}]


def _dump(obj, ascii_only):
    return json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


def check_result(payload):
    """trigger.parse(payload): only OtaError may come out; a result is None or a dict of the
    documented types. Returns the result (or the OtaError's reason)."""
    try:
        job = trigger.parse(payload)
    except OtaError as e:
        assert isinstance(e.reason, str) and e.reason, e
        return e.reason
    if job is None:
        return None
    assert isinstance(job, dict), job
    assert job["type"] in trigger.KNOWN_TYPES
    if job["type"] == "ota_trigger":
        url = job["url"]
        assert isinstance(url, str) and 0 < len(url) <= 512 and url.isascii() and url.isprintable(), url
        assert url.split("://")[0].lower() in ("http", "https"), url
        assert job["sha256"] is None or (isinstance(job["sha256"], str) and len(job["sha256"]) == 64
                                         and all(c in "0123456789abcdef" for c in job["sha256"])), job
        assert job["size"] is None or (type(job["size"]) is int and job["size"] > 0), job
        assert job["version"] is None or _printable(job["version"], 31), job
    for key, limit in (("id", 40), ("signature", 256), ("target", 200)):
        assert job.get(key) is None or _printable(job[key], limit), (key, job)
    assert job.get("expires") is None or (type(job["expires"]) is int and job["expires"] >= 0), job
    assert type(job.get("allow_downgrade", False)) is bool, job
    for key, value in job.items():  # fields added later: still plain JSON scalars
        assert value is None or type(value) in (bool, int, str), (key, job)
    return job


def _printable(value, limit):
    return isinstance(value, str) and 0 < len(value) <= limit and all(0x20 <= ord(c) <= 0x7E for c in value)


_SETTINGS = dict(deadline=None, database=None, derandomize=False, phases=(Phase.generate, Phase.shrink),
                 suppress_health_check=list(HealthCheck), print_blob=True)
_SEEN = {"bytes": {}, "objects": {}, "mutations": {}}


def _count(kind, outcome):
    name = "ok" if isinstance(outcome, dict) else "ignored" if outcome is None else outcome
    _SEEN[kind][name] = _SEEN[kind].get(name, 0) + 1


def _record(kind, label):
    # Three rows per strategy: parsed as a trigger (success), ignored (not ours: None), refused (OtaError).
    seen = _SEEN[kind]
    total = sum(seen.values())
    reasons = sorted(k for k in seen if k not in ("ok", "ignored"))
    fault = "fuzz: parser, %s" % label
    case = "seed %d" % SEED
    refused = total - seen.get("ok", 0) - seen.get("ignored", 0)
    for outcome, n, reason in (("success", seen.get("ok", 0), None), ("ignored", seen.get("ignored", 0), None),
                               ("refused", refused, ", ".join(reasons) or None)):
        if n:
            faultmatrix.record(fault, case, outcome, reason=reason, n=n)
    print("fuzz parser %s: seed %d, %d cases: %s" % (label, SEED, total, dict(sorted(seen.items()))))


@seed(SEED)
@settings(max_examples=PARSER_CASES // 3, **_SETTINGS)
@given(st.binary(max_size=1100))
def _fuzz_bytes(payload):
    _count("bytes", check_result(payload))


_OBJECT_KEYS = KEYS + ("extra", "URL", "")
_TYPES = ("ota_trigger", "ota_revert", "ota_trigger", "ota_trigger", "other", None)
_URLS = [p for p in POOL if isinstance(p, str) and "://" in p]


def _object(program, text, number, real, ascii_only):
    # A JSON object built from program, 2 bytes per field: which key, which value (from POOL, or
    # the drawn text / integer / float). The first byte picks the type (or none), the second may
    # put one of the pool's URLs in. One draw per argument: fast, and it still shrinks.
    extra = [text, number, real, text.upper()]
    obj = {}
    if program:
        kind = _TYPES[program[0] % len(_TYPES)]
        if kind is not None:
            obj["type"] = kind
    if len(program) > 1 and program[1] & 1:
        obj["url"] = _URLS[program[1] % len(_URLS)]
    for i in range(2, len(program) - 1, 2):
        key = _OBJECT_KEYS[program[i] % len(_OBJECT_KEYS)]
        pick = program[i + 1] % (len(POOL) + len(extra))
        obj[key] = POOL[pick] if pick < len(POOL) else extra[pick - len(POOL)]
    return _dump(obj, ascii_only)


_objects = st.builds(_object, st.binary(max_size=24), st.text(max_size=40), st.integers(), st.floats(),
                     st.booleans())


@seed(SEED + 1)
@settings(max_examples=PARSER_CASES // 3, **_SETTINGS)
@given(_objects)
def _fuzz_objects(payload):
    _count("objects", check_result(payload))


_INSERTS = (b'"', b"\\", b"{", b"}", b",", b":", b"\\u0000", b"\xff", b"1e999", b"null", b"[", b"]", b" ",
            b"\xc3\xa9", b"\\ud800", b"-0", b'"type"', b'"url":', b"true")


def _mutate(mask, program):
    # A valid trigger (fields dropped by the bits of mask), then edits read from program, 3 bytes
    # each: op, and a 16-bit position: flip a byte, insert a token, delete a span, truncate,
    # duplicate the 20 bytes before. One hypothesis draw per part: fast, and it still shrinks.
    base = {k: v for i, (k, v) in enumerate(GOOD.items()) if k == "type" or not mask >> i & 1}
    data = bytearray(_dump(base, True))
    for i in range(0, len(program) - 2, 3):
        op, at = program[i] % 5, (program[i + 1] << 8 | program[i + 2]) % (len(data) + 1)
        if op == 0 and data:
            data[min(at, len(data) - 1)] = program[i + 2] ^ program[i]
        elif op == 1:
            data[at:at] = _INSERTS[program[i + 1] % len(_INSERTS)]
        elif op == 2:
            del data[at:at + 1 + program[i] % 8]
        elif op == 3:
            del data[at:]
        else:
            data[at:at] = data[max(0, at - 20):at]
    return bytes(data)


_mutated = st.builds(_mutate, st.integers(0, 1023), st.binary(min_size=3, max_size=18))


@seed(SEED + 2)
@settings(max_examples=PARSER_CASES - 2 * (PARSER_CASES // 3), **_SETTINGS)
@given(_mutated)
def _fuzz_mutations(payload):
    _count("mutations", check_result(payload))


@pytest.mark.parametrize("kind", ["bytes", "objects", "mutations"])
def test_faults_fuzz_trigger_parser(kind):
    print("trigger parser fuzz: hypothesis seed %d (+0/1/2 per strategy), OTA_FUZZ_SEED to change" % SEED)
    faultmatrix.note("fuzz: seed %d (OTA_FUZZ_SEED=%d to replay); parser %d cases, device %d payloads"
                     % (SEED, SEED, PARSER_CASES, DEVICE_PAYLOADS))
    _SEEN[kind].clear()
    {"bytes": _fuzz_bytes, "objects": _fuzz_objects, "mutations": _fuzz_mutations}[kind]()
    _record(kind, {"bytes": "random bytes", "objects": "random JSON objects",
                   "mutations": "mutated valid triggers"}[kind])
    assert sum(_SEEN[kind].values()) >= (PARSER_CASES // 3) * 0.99


# --- (b) random payloads to a device -------------------------------------------------------------------
def _local_only(payload):
    # True when no URL in the payload (raw, or decoded by the parser) names a non-loopback host.
    raw = bytes(payload)
    at = raw.find(b"://")
    while at >= 0:
        rest = raw[at + 3:at + 3 + 12]
        if not rest.startswith((b"localhost", b"127.0.0.1", b"[::1]")):
            return False
        at = raw.find(b"://", at + 3)
    try:
        job = trigger.parse(raw)
    except OtaError:
        return True
    if job and job.get("url"):
        try:
            return urls.split(job["url"])[1] in LOOPBACK
        except OtaError:
            return True  # https.open refuses it before any lookup
    return True


def device_payloads(rng, count, device_id):
    """[(topic, payload bytes)]: random bytes, random JSON, mutated triggers, oversize, deep nesting."""
    out = []
    base = dict(GOOD, target=device_id)
    while len(out) < count:
        kind = rng.randrange(9)
        if kind == 0:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        elif kind == 1:  # JSON objects over the known keys, awkward values
            obj = {k: rng.choice(POOL) for k in rng.sample(KEYS, rng.randrange(0, len(KEYS)))}
            if rng.random() < 0.7:
                obj["type"] = rng.choice(["ota_trigger", "ota_revert", "other", 7])
            payload = _dump(obj, rng.random() < 0.5)
        elif kind in (2, 3, 4):  # a valid trigger with a few bytes changed
            data = bytearray(_dump({k: v for k, v in base.items() if rng.random() < 0.8 or k in ("type", "url")},
                                   True))
            for _ in range(rng.randrange(1, 5)):
                at = rng.randrange(len(data))
                op = rng.randrange(3)
                if op == 0:
                    data[at] = rng.randrange(256)
                elif op == 1:
                    del data[at:at + rng.randrange(1, 6)]
                else:
                    data[at:at] = rng.choice([b'"', b"{", b"}", b"\\", b"\xff", b"null", b",", b"1e999"])
            payload = bytes(data)
        elif kind == 5:  # JSON that is not an object, or deeply nested
            depth = rng.randrange(1, 600)
            payload = rng.choice([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b"null",
                                  b"42", b'"ota_trigger"', b"[" * depth, b"true", b"-", b"1e99999"])
        elif kind == 6:  # over the 1024-byte limit, sometimes far over it
            size = rng.choice([1025, 1100, 4096, 16384])  # 64 KB: once, below, with its own checks
            payload = (b'{"type":"ota_trigger","url":"https://localhost:%d/' % CLOSED_PORT
                       + b"a" * size + b'"}')
        elif kind == 7:  # text: UTF-8, NULs, control characters
            payload = "".join(chr(rng.choice([0, 9, 10, 0x7F, 0xE9, 0x2603, 0x1F600, rng.randrange(32, 127)]))
                              for _ in range(rng.randrange(0, 100))).encode("utf-8")
        else:  # an ota_revert: the other slot is blank, so revert_no_image
            payload = _dump({"type": "ota_revert", "id": "rv-%d" % rng.randrange(10 ** 6)}, True)
        if not _local_only(payload):
            continue
        topic = "/switch/cmd/root" if rng.random() < 0.3 else "/switch/cmd/" + device_id
        out.append((topic, payload))
    return out


pytestmark_device = pytest.mark.skipif(find_backend() is None or find_nginx() is None,
                                       reason="needs mosquitto (or amqtt) and nginx")


@pytestmark_device
def test_faults_fuzz_device_payloads(tmp_path):
    root = tmp_path
    images = {"1.0.0": simfleet.firmware("1.0.0"), "1.0.1": simfleet.firmware("1.0.1", size=1713728)}
    device_id = "fc0000000001"
    topic = "/switch/state/" + device_id
    rng = random.Random(SEED)
    payloads = device_payloads(rng, DEVICE_PAYLOADS, device_id)
    print("device fuzz: seed %d, %d payloads (OTA_FUZZ_SEED to replay)" % (SEED, len(payloads)))
    started = time.monotonic()
    fuzz_seconds = 0.0
    probes_lost = 0
    problems = []
    with simfleet.lab(root, images) as world:
        broker, web, pki = world["broker"], world["web"], world["pki"]
        watch = Watcher(broker.host, broker.port, topics=(topic,))
        device = simfleet.new_device(str(root / "dev"), images["1.0.0"], broker.host, broker.port,
                                     ca_der=pki.ca_der, unique_id=device_id)
        device.start()
        try:
            watch.wait_for(lambda m: m.state == "idle", timeout=60)
            answered = 0

            def probe(tag, attempts, timeout, mark):
                # A valid trigger for a closed local port, answered failed/connect_failed. A command
                # sent while the device reconnects would be lost (clean MQTT session), so an
                # unanswered probe is sent again a few times before the device counts as unresponsive.
                # Returns the number of probes lost; None when none was answered.
                lost = 0
                for attempt in range(attempts):
                    job = "probe-%s-%d" % (tag, attempt)
                    watch.publish("/switch/cmd/" + device_id,
                                  {"type": "ota_trigger", "url": "https://localhost:%d/probe.bin" % CLOSED_PORT,
                                   "id": job})
                    try:
                        watch.wait_for(lambda m: m.get("job") == job, timeout=timeout, start=mark)
                        return lost
                    except TimeoutError:
                        lost += 1
                return None

            for first in range(0, len(payloads), BATCH):
                mark = len(watch.messages)
                for cmd, payload in payloads[first:first + BATCH]:
                    watch.publish(cmd, payload)
                lost = probe(first, 4, 10, mark)
                if lost is None:
                    probes_lost += 4
                    problems.append("no answer to 4 probes after payloads %d..%d" % (first, first + BATCH - 1))
                    break
                probes_lost += lost
                answered += len(watch.messages) - mark
                if device.result is not None:
                    problems.append("the device process ended: %s" % device.result)
                    break
            # One 64 KB message: more than the simulated device's GC heap can hold at once (a C3's
            # starting GC heap is 64 KiB). The device must survive it and answer again.
            if not problems:
                mark = len(watch.messages)
                watch.publish("/switch/cmd/" + device_id, b'{"type":"ota_trigger","url":"https://localhost:%d/'
                              % CLOSED_PORT + b"a" * 65536 + b'"}')
                try:  # drained, not held: refused with its size, the connection stays up
                    watch.wait_for(lambda m: m.get("reason") == "too_long" and " bytes > 1024" in
                                   (m.get("detail") or "") and int(m.get("detail").split()[0]) > 65536,
                                   timeout=10, start=mark)
                except TimeoutError:
                    problems.append("a 64 KB message was not refused as too_long")
                lost = probe("big", 10, 4, mark)
                if lost is None:
                    probes_lost += 10
                    problems.append("no answer to 10 probes after a 64 KB message")
                else:
                    probes_lost += lost
            fuzz_seconds = time.monotonic() - started
            # The next valid trigger works.
            mark = len(watch.messages)
            blob = images["1.0.1"]
            watch.publish("/switch/cmd/" + device_id, {"type": "ota_trigger", "url": web.url("firmware-1.0.1.bin"),
                                                       "sha256": hashlib.sha256(blob).hexdigest(), "id": "after-fuzz"})
            try:
                done = watch.wait_for(lambda m: m.get("job") == "after-fuzz" and m.state in ("ok", "failed"),
                                      timeout=120, start=mark)
                if done.state != "ok" or done.get("version") != "1.0.1":
                    problems.append("the update after the fuzz ended %s %s" % (done.state, done.get("reason")))
            except TimeoutError as e:
                problems.append("the update after the fuzz: %s" % e)
        finally:
            device.stop()
            watch.close()
    boots = device.boots()
    console = device.console()
    if "Traceback" in console:
        at = console.index("Traceback")
        problems.append("Traceback on the console: %s" % console[at:at + 1200])
    if [b.get("version") for b in boots[:2]] != ["1.0.0", "1.0.1"]:
        problems.append("boots %s: the device rebooted during the fuzz (expected 1.0.0 then 1.0.1)"
                        % [(b.get("version"), b.get("exit")) for b in boots])
    reasons = sorted({m.get("reason") for m in watch.messages if m.state == "failed" and m.get("reason")})
    # Oversized payloads (up to 64 KB) are drained by ota.mqtt and refused as too_long: the MQTT
    # connection must never drop over them (it used to, on a MemoryError, losing commands meanwhile).
    drops = console.count("agent: connection lost")
    faultmatrix.note("fuzz device: MQTT connection dropped %d time(s), %d probe(s) lost" % (drops, probes_lost))
    if drops or probes_lost:
        problems.append("the MQTT connection dropped %d time(s), %d probe(s) lost" % (drops, probes_lost))
    if drops:
        print("device fuzz: the agent dropped and re-made its MQTT connection %d time(s); %d probe(s) lost:\n%s"
              % (drops, probes_lost, "\n".join(text for text in console.splitlines() if "connection lost" in text)))
    bricked = any(b.get("slot") is None or b.get("exit") in ("no_app", "crashed") for b in boots[:-1])
    faultmatrix.record("fuzz: device (broker -> agent)", "%d payloads (seed %d)" % (len(payloads), SEED),
                       "refused" if not problems else "error", reason=", ".join(reasons) or None,
                       bricked=bricked, allowed=not problems, seconds=fuzz_seconds,
                       detail=("; ".join(problems)[:400] or "") + " MQTT reconnects: %d, probes lost: %d"
                       % (drops, probes_lost), n=len(payloads))
    faultmatrix.record("fuzz: device (broker -> agent)", "the valid trigger after the fuzz",
                       "success" if not problems else "error", allowed=not problems)
    print("device fuzz: %d payloads in %.1f s, %d state messages, reasons %s"
          % (len(payloads), fuzz_seconds, answered, reasons))
    assert not problems, "\n".join(problems)
