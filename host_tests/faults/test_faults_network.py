# Network faults during a download (the fault-injection matrix, issue "trust and resilience").
#
# The real agent on the simulator downloads through devkit/faultproxy.py (TCP level: drops with FIN or
# RST at seeded random offsets, once or k times; stalls; a 10 KB/s trickle; an RST in the middle of the
# TLS handshake; pass-through) in front of real nginx, or from our dev server for the HTTP-level faults
# (a 200 to a Range request, a body shorter than its Content-Length), and from nginx's redirect loop.
# The device connects to the proxy as localhost:PORT, so certificate verification still passes.
# For each case: the job ends in success or with one of the reason codes the fault allows (timeout,
# connection_lost, tls_failed, too_many_redirects, ...), and the boot slot never holds a corrupted
# image: after the job the slot otadata selects holds the old image, or the new one byte for byte.
# A refused job is followed by a pass-through update, which must succeed.
# Short form (`make test`): 12 cases. Full form (OTA_FAULTS=full): more seeds, k = 8 drops, the whole
# 200 KB image at 10 KB/s, the dev server's stall and a 404.
import hashlib
import os
import random
import time

import pytest

from devkit import faultmatrix, simfleet
from devkit.broker import Watcher, find_backend
from devkit.devserver import DevServer
from devkit.faultproxy import FaultProxy
from devkit.nginx import find_nginx

pytest_plugins = ["devkit.faultmatrix"]
pytestmark = pytest.mark.skipif(find_backend() is None or find_nginx() is None,
                                reason="needs mosquitto (or amqtt) and nginx")

BIG = 1713728
# The trickle case: 32 s at 10 KB/s. It must hold the synthetic image with every device module
# packed in (about 260 KB since issues 11-14; it was 200 KB before them).
SMALL = 327680
SEED = 4242
WORKERS = 3
TIMEOUT = 120
# Short timeouts so a stall costs seconds, not the default 10 s per attempt.
OTA = {"read_timeout": 2, "connect_timeout": 2, "retry_backoff_ms": 100}

SUCCESS = {("ok", None)}


def refused(*reasons):
    return {("failed", r) for r in reasons}


def _cases():
    """[(group, name, setup, allowed, image, ota overrides)]. setup(proxy, dev) arms the fault and
    returns the URL path kind: "proxy" (through the proxy to nginx), "devserver", "loop", "404"."""
    full = faultmatrix.FULL
    rng = random.Random(SEED)
    cases = []

    def add(group, name, setup, allowed, image="1.0.1", ota=None, evidence=None):
        # evidence(proxy, dev) -> None, or what shows the fault did not happen as planned
        cases.append((group, name, setup, allowed, image, dict(OTA, **(ota or {})), evidence))

    def settled(proxy, prefix, count):
        # The device can report its job before the proxy's thread (polling every 0.2 s) has
        # noticed the client closing: give the record a few seconds to catch up.
        deadline = time.monotonic() + 5
        while True:
            seen = sum(1 for end in proxy.ends() if (end or "").startswith(prefix))
            if seen >= count or time.monotonic() > deadline:
                return seen
            time.sleep(0.05)

    def ended(prefix, count=1):
        def check(proxy, dev):
            seen = settled(proxy, prefix, count)
            return None if seen >= count else "%d of %d connections ended %r: %s" % (
                seen, count, prefix, proxy.ends())
        return check

    def cut(count=1):
        def check(proxy, dev):
            seen = settled(proxy, ("dropped", "reset"), count)
            return None if seen >= count else "%d of %d connections cut: %s" % (seen, count, proxy.ends())
        return check

    def drop(n, times=1, reset=False):
        # "random": an offset in 1..BIG/(times+1) of each connection, so all `times` cuts land
        # before the (resumed) body ends.
        def setup(proxy, dev):
            proxy.drop_after(n, times=times, reset=reset, size=BIG // ((times or 1) + 1))
            return "proxy"
        return setup

    add("net: pass-through", "pass-through", lambda p, d: "proxy", SUCCESS)
    for _ in range(3 if full else 1):
        n = rng.randrange(2000, BIG)
        add("net: drop once (FIN)", "drop after %d bytes" % n, drop(n), SUCCESS, evidence=ended("dropped"))
    if full:
        add("net: drop once (RST)", "RST after random offset", drop("random", reset=True), SUCCESS,
            evidence=ended("reset"))
        # In the TLS records of the response head: the body has not started, and a failure before
        # the body is not resumed (fetch.py: retrying a job that never started is the operator's).
        add("net: drop once (RST)", "RST after 3000 bytes (response head)", drop(3000, reset=True),
            refused("connection_lost", "tls_failed") | SUCCESS, evidence=ended("reset"))
    k = 8 if full else 3
    add("net: drop k times", "%d drops at random offsets (RST)" % k, drop("random", times=k, reset=True), SUCCESS,
        evidence=ended("reset", k))
    if full:
        add("net: drop k times", "%d drops at random offsets (FIN)" % k, drop("random", times=k), SUCCESS,
            evidence=ended("dropped", k))
    add("net: drop before the body, always", "every connection cut after 1500 bytes",
        drop(1500, times=None), refused("connection_lost", "tls_failed"), evidence=cut())

    def stall_once(proxy, dev):
        proxy.stall(after=rng.randrange(100000, BIG - 100000), times=1, seconds=30)
        return "proxy"

    def stall_always(proxy, dev):
        proxy.stall(after=0, times=None, seconds=30)
        return "proxy"

    add("net: stall", "stall mid-body once", stall_once, SUCCESS, evidence=ended("stalled"))
    add("net: stall", "stall from the first byte, always", stall_always, refused("timeout"),
        ota={"retries": 1}, evidence=ended("stalled", 2))  # a first connection is retried too

    def slow(seconds):
        def check(proxy, dev):
            deadline = time.monotonic() + 5  # as in settled(): the proxy's record may lag the device
            while (not proxy.connections or proxy.connections[0]["seconds"] is None) and time.monotonic() < deadline:
                time.sleep(0.05)
            took = proxy.connections[0]["seconds"] if proxy.connections else 0
            return None if took and took >= seconds else "the download took %s s, not >= %s" % (took, seconds)
        return check

    def trickle(proxy, dev):
        proxy.trickle(10 * 1024, seconds=None if full else 3)
        return "proxy"

    add("net: trickle 10 KB/s", "%d KB image at 10 KB/s%s" % (SMALL // 1024, "" if full else " for 3 s, then full"),
        trickle, SUCCESS, image="1.0.1-small", evidence=slow(18 if full else 2.5))

    def rst_handshake(proxy, dev):
        proxy.rst_handshake(times=1)
        return "proxy"

    def rst_always(proxy, dev):
        proxy.rst_handshake(times=100)
        return "proxy"

    def drop_then_rst(proxy, dev):
        proxy.sequence({"kind": "drop", "n": "random", "size": BIG}, {"kind": "rst"}, {"kind": "rst"})
        return "proxy"

    add("net: RST in TLS handshake", "first connection, once (retried)", rst_handshake, SUCCESS,
        evidence=ended("rst in handshake"))
    add("net: RST in TLS handshake", "every connection", rst_always, refused("tls_failed", "connection_lost"),
        ota={"retries": 1}, evidence=ended("rst in handshake", 2))
    add("net: RST in TLS handshake", "on the resume connections (after a drop)", drop_then_rst, SUCCESS,
        evidence=ended("rst in handshake", 2))

    def ignore_range(proxy, dev):
        dev.faults.ignore_range = True
        dev.faults.drop_after = "random"
        return "devserver"

    def short_body(proxy, dev):
        dev.faults.short_body = 1000
        return "devserver"

    def stall_server(proxy, dev):
        dev.faults.stall = True
        dev.faults.stall_seconds = 30
        return "devserver"

    def ranged(proxy, dev):
        asked = [r for r in dev.requests if "range" in r["headers"]]
        return None if asked else "no request carried a Range header: %s" % dev.requests
    add("http: 200 to a Range request", "drop at a random offset, then 200 from byte 0", ignore_range, SUCCESS,
        evidence=ranged)
    add("http: body shorter than Content-Length", "1000 bytes withheld", short_body,
        refused("connection_lost", "truncated"), ota={"retries": 2}, evidence=ranged)
    add("http: redirect loop", "nginx /redirect/loop", lambda p, d: "loop", refused("too_many_redirects"))
    if full:
        add("http: stall after the headers", "dev server stall", stall_server, refused("timeout"),
            ota={"retries": 1})
        add("http: 404", "nginx /status/404", lambda p, d: "404", refused("http_404"))
        add("http: redirects (2 hops)", "nginx /redirect/two", lambda p, d: "two", SUCCESS)
    return cases


CASES, GROUPS = faultmatrix.select(_cases())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    images = {"1.0.0": simfleet.firmware("1.0.0"), "1.0.1": simfleet.firmware("1.0.1", size=BIG),
              "1.0.1-small": simfleet.firmware("1.0.1", size=SMALL)}
    faultmatrix.note("network faults: seed %d (proxy offsets; proxies seeded %d + case index)" % (SEED, SEED))
    # firmware.bin: where nginx's fixed redirect routes lead
    with simfleet.lab(tmp_path_factory.mktemp("faults-net"), images,
                      {"firmware.bin": images["1.0.1"]}) as world:
        watch = Watcher(world["broker"].host, world["broker"].port)
        try:
            yield dict(world, watch=watch)
        finally:
            watch.close()


def _url(world, kind, proxy, dev, image):
    name = "firmware-%s.bin" % image
    return {"proxy": lambda: proxy.url(name), "devserver": lambda: dev.url(name),
            "loop": lambda: proxy.url("redirect/loop"), "404": lambda: proxy.url("status/404"),
            "two": lambda: proxy.url("redirect/two")}[kind]()


def _slot_ok(world, device, new_image):
    # The slot otadata selects holds the old image or exactly the new one. -> (ok, which)
    otadata = device.read_otadata()
    label = otadata["slot"] or "ota_0"
    slot = device.partition(label)
    old = world["images"]["1.0.0"]
    if label == "ota_0" and device.read_flash(slot.offset, len(old)) == old:
        return True, "old"
    if device.read_flash(slot.offset, len(new_image)) == new_image:
        return True, "new"
    return False, "corrupted %s" % label


def _run(world, index, case):
    group, name, setup, allowed, image, ota, evidence = case
    started = time.monotonic()
    uid = "fb%010x" % (index + 1)
    topic, cmd = "/switch/state/" + uid, "/switch/cmd/" + uid
    broker, watch = world["broker"], world["watch"]
    pki = world["pki"]
    problems, outcome, device = [], None, None
    proxy = FaultProxy(("127.0.0.1", world["web"].port), seed=SEED + index).start()
    dev = DevServer(world["www"], pki.server_cert, pki.server_key).start()
    dev.rng.seed(SEED + index)

    def wait(predicate, start):
        return watch.wait_for(lambda m: m.topic == topic and predicate(m), timeout=TIMEOUT, start=start)

    def job(url, blob, job_id):
        mark = len(watch.messages)
        watch.publish(cmd, {"type": "ota_trigger", "url": url, "sha256": hashlib.sha256(blob).hexdigest(),
                            "id": job_id})
        return wait(lambda m: m.get("job") == job_id and m.state in ("ok", "failed", "rolled_back"), mark)

    try:
        device = simfleet.new_device(os.path.join(world["root"], uid), world["images"]["1.0.0"], broker.host,
                                     broker.port, ca_der=pki.ca_der, unique_id=uid, ota=ota)
        device.start()
        wait(lambda m: m.state == "idle", 0)
        blob = world["images"][image]
        kind = setup(proxy, dev)
        end = job(_url(world, kind, proxy, dev, image), blob, "net-" + uid)
        outcome = (end.state, end.get("reason"))
        missing = evidence(proxy, dev) if evidence else None
        if missing:
            problems.append("the fault did not happen as planned: " + missing)
        if outcome not in allowed:
            problems.append("ended %s (%s), allowed %s" % (outcome, end.get("detail"), sorted(allowed, key=str)))
        good, which = _slot_ok(world, device, blob if kind != "two" else world["images"]["1.0.1"])
        if not good or (end.state == "ok") != (which == "new"):
            problems.append("boot slot after the job: %s (state %s)" % (which, end.state))
        if end.state != "ok":  # the device is still fine: a clean update goes through
            proxy.pass_through()
            dev.faults.reset()
            again = job(world["web"].url("firmware-1.0.1.bin"), world["images"]["1.0.1"], "again-" + uid)
            if again.state != "ok":
                problems.append("the following update ended %s %s" % (again.state, again.get("reason")))
            good, which = _slot_ok(world, device, world["images"]["1.0.1"])
            if not good or which != "new":
                problems.append("boot slot after the following update: %s" % which)
    except Exception as e:  # a timeout: the row says so, the test fails
        problems.append("%s: %s" % (type(e).__name__, e))
    finally:
        if device is not None:
            device.stop()
        proxy.stop()
        dev.stop()
    boots = device.boots() if device is not None else []
    bricked = any(b.get("slot") is None or b.get("version") is None for b in boots)
    if device is not None and "Traceback" in device.console():
        problems.append("Traceback on the console")
    state, reason = outcome or ("error", None)
    faultmatrix.record(group, name, faultmatrix.outcome_of(state),
                       reason=reason, bricked=bricked, allowed=not problems, seconds=time.monotonic() - started,
                       detail="; ".join(problems)[:400] or None)
    return {"group": group, "name": name, "problems": problems, "bricked": bricked,
            "connections": proxy.ends(),
            "console": device.console()[-1500:] if device is not None else ""}


@pytest.fixture(scope="module")
def results(world):
    return faultmatrix.run_grouped(CASES, lambda i, case: _run(world, i, case), WORKERS, lambda r: r["group"])


@pytest.mark.parametrize("group", GROUPS)
def test_faults_network(results, group):
    done = results[group]
    assert not [r["name"] for r in done if r["bricked"]]
    bad = ["%s: %s\n  proxy: %s\n  console tail: %s" % (r["name"], "; ".join(r["problems"]), r["connections"],
                                                        r["console"]) for r in done if r["problems"]]
    assert not bad, "\n".join(bad)
