# End-to-end tests of lib/ota/https.py inside the REAL MicroPython Unix port (mbedTLS), downloading
# from a real nginx and from our fault-injecting dev server, with a throwaway CA (devkit/tls.py).
# Each case runs a small driver script in a fresh `micropython` process whose cwd holds ca.der,
# the way the device's filesystem does; the driver prints one JSON line with what happened.
import hashlib
import json
import os
import random
import subprocess
import sys

import pytest

from paths import LIB, MICROPYTHON

from devkit.devserver import DevServer
from devkit.nginx import Nginx, free_port

SIZE = 1_713_728  # the official MicroPython v1.24.1 ESP32_GENERIC_C3 app (docs/CHIP.md §3)
HEAP = "64wK"  # about the C3's starting GC heap (docs/CHIP.md §5)

DRIVER = r"""
import sys, json, hashlib, time
sys.path.insert(0, sys.argv[1])
from ota import https
from ota.errors import OtaError
a = json.loads(sys.argv[2])
opts = a.get("opts", {})
buf = bytearray(4096)
out = {"requests": 0}

def fetch():
    h = hashlib.sha256()
    done = a.get("start", 0)
    while True:
        out["requests"] += 1
        resp = https.open(a["url"], start=done, **opts)
        out.update(status=resp.status, range_start=resp.range_start, total=resp.total,
                   length=resp.length, chunked=resp.chunked, final_url=resp.url)
        if resp.status == 200 and done:
            h = hashlib.sha256()   # the server ignored Range: start over
            done = 0
        try:
            while True:
                n = resp.readinto(buf)
                if n == 0:
                    break
                h.update(buf if n == len(buf) else memoryview(buf)[:n])
                done += n
            resp.close()
            out.update(bytes=done, sha256=h.digest().hex())
            return
        except (OtaError, OSError) as e:
            resp.close()
            why = e.reason if isinstance(e, OtaError) else https.reason(e)
            if not a.get("resume") or why not in ("connection_lost", "timeout") or out["requests"] > 50:
                raise

def measure():
    import micropython
    resp = https.open(a["url"], **opts)
    t0 = time.ticks_ms()
    for _ in range(16):
        resp.readinto(buf)      # warm up: first calls may allocate lazily
    chunks = 0
    before = micropython.mem_total()
    while chunks < 256:
        resp.readinto(buf)
        chunks += 1
    after = micropython.mem_total()
    total = 272 * 4096
    while True:
        n = resp.readinto(buf)
        if n == 0:
            break
        total += n
    ms = time.ticks_diff(time.ticks_ms(), t0)
    resp.close()
    out.update(alloc_per_chunk=(after - before) / chunks, bytes=total, ms=ms)

try:
    measure() if a.get("mode") == "measure" else fetch()
    out["ok"] = True
except OtaError as e:
    out.update(ok=False, reason=e.reason, detail=e.detail)
except OSError as e:
    out.update(ok=False, reason=https.reason(e), oserror=[str(x) for x in e.args])
print(json.dumps(out))
"""


def run(tmp, url, timeout=30, **args):
    args["url"] = url
    result = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=" + HEAP, "driver.py", LIB, json.dumps(args)],
        cwd=tmp, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def env(tls_site):
    if not os.access(MICROPYTHON, os.X_OK):
        pytest.skip("no MicroPython binary in .venv (make venv)")
    data = random.Random(7).randbytes(SIZE)
    base, pki, www = tls_site("https", {"firmware.bin": data})
    device = base / "device"  # the device's filesystem: the process cwd
    device.mkdir()
    (device / "ca.der").write_bytes(open(pki.ca_der, "rb").read())
    (device / "ca.pem").write_bytes(open(pki.ca_pem, "rb").read())
    (device / "other-ca.der").write_bytes(open(pki.other_ca_der, "rb").read())
    (device / "driver.py").write_text(DRIVER)
    env = type("Env", (), {})()
    env.pki, env.www, env.data, env.device = pki, str(www), data, str(device)
    env.sha256 = hashlib.sha256(data).hexdigest()
    return env


@pytest.fixture(scope="module")
def web(env):
    with Nginx(env.www, env.pki.server_cert, env.pki.server_key) as server:
        yield server


@pytest.fixture(scope="module")
def _dev(env):
    with DevServer(env.www, env.pki.server_cert, env.pki.server_key) as server:
        yield server


@pytest.fixture
def dev(_dev):
    _dev.reset()
    yield _dev
    _dev.reset()


def test_full_download_from_nginx(env, web):
    r = run(env.device, web.url("firmware.bin"))
    assert r["ok"], r
    assert (r["status"], r["total"], r["length"], r["range_start"]) == (200, SIZE, SIZE, None)
    assert r["sha256"] == env.sha256


def test_pem_ca_file_is_accepted(env, web):
    r = run(env.device, web.url("firmware.bin"), opts={"ca_path": "ca.pem"})
    assert r["ok"] and r["sha256"] == env.sha256, r


@pytest.mark.parametrize("path,reason", [
    ("status/404", "http_404"), ("status/500", "http_500"), ("missing.bin", "http_404"),
    ("redirect/loop", "too_many_redirects"), ("redirect/http", "insecure_redirect"),
])
def test_refusals_from_nginx(env, web, path, reason):
    r = run(env.device, web.url(path))
    assert not r["ok"] and r["reason"] == reason, r


@pytest.mark.parametrize("path", ["redirect/two", "redirect/other"])
def test_redirects_followed(env, web, path):
    r = run(env.device, web.url(path))
    assert r["ok"] and r["sha256"] == env.sha256, r
    assert r["final_url"].endswith("/firmware.bin")


def test_redirect_limit_counts_hops(env, web):
    r = run(env.device, web.url("redirect/two"), opts={"max_redirects": 1})
    assert r["reason"] == "too_many_redirects", r


def test_plain_http_refused_unless_allowed(env, web):
    r = run(env.device, web.http_url("firmware.bin"))
    assert r["reason"] == "http_not_allowed", r
    r = run(env.device, web.http_url("firmware.bin"), opts={"allow_http": True})
    assert r["ok"] and r["sha256"] == env.sha256, r


def test_range_request_gets_206_from_offset(env, web):
    start = 1_000_003
    r = run(env.device, web.url("firmware.bin"), start=start)
    assert r["ok"], r
    assert (r["status"], r["range_start"], r["total"], r["length"]) == (206, start, SIZE, SIZE - start)
    assert r["sha256"] == hashlib.sha256(env.data[start:]).hexdigest()


def test_range_answered_with_200_is_exposed(env, dev):
    dev.faults.ignore_range = True
    r = run(env.device, dev.url("firmware.bin"), start=5000)
    assert r["ok"] and (r["status"], r["range_start"]) == (200, None), r
    assert r["sha256"] == env.sha256  # the driver restarted its hash on the 200
    assert dev.requests[0]["headers"]["range"] == "bytes=5000-"


def test_token_goes_only_to_the_first_host(env, dev):
    dev.token = "s3cret"
    dev.redirects = {"/private/firmware.bin": (302, "{ip_origin}/firmware.bin")}
    r = run(env.device, dev.url("private/firmware.bin"),
            opts={"token": "s3cret", "token_origin": "https://localhost:%d" % dev.port})
    assert r["ok"] and r["sha256"] == env.sha256, r
    first, second = dev.requests
    assert first["host"] == "localhost" and first["headers"]["authorization"] == "Bearer s3cret"
    assert second["host"] == "127.0.0.1" and "authorization" not in second["headers"]
    assert first["headers"]["connection"] == "close"


def test_wrong_token_is_http_401(env, dev):
    dev.token = "s3cret"
    r = run(env.device, dev.url("firmware.bin"),
            opts={"token": "nope", "token_origin": "https://localhost:%d" % dev.port})
    assert r["reason"] == "http_401", r


def test_stalled_server_times_out(env, dev):
    dev.faults.stall = True
    dev.faults.stall_seconds = 3
    r = run(env.device, dev.url("firmware.bin"), opts={"read_timeout": 1})
    assert r["reason"] == "timeout", r


def test_chunked_body_decoded(env, dev):
    dev.faults.chunked = True
    r = run(env.device, dev.url("firmware.bin"))
    assert r["ok"] and r["chunked"] and r["length"] is None, r
    assert r["sha256"] == env.sha256


@pytest.mark.parametrize("fault", [{"short_body": 1000}, {"drop_after": 300_000},
                                   {"drop_after": 300_000, "drop_reset": True},
                                   {"chunked": True, "drop_after": 300_000}])
def test_cut_body_is_connection_lost(env, dev, fault):
    for name, value in fault.items():
        setattr(dev.faults, name, value)
    r = run(env.device, dev.url("firmware.bin"))
    assert not r["ok"] and r["reason"] == "connection_lost", r


def test_resume_after_random_drops(env, dev):
    dev.faults.drop_after = "random"
    dev.faults.drop_every = True
    dev.rng.seed(99)
    # every request is cut somewhere; resuming with start=N still assembles the exact file
    r = run(env.device, dev.url("firmware.bin"), resume=True)
    assert r["ok"] and r["sha256"] == env.sha256, r
    assert r["requests"] > 1 and r["status"] == 206


@pytest.mark.parametrize("cert", ["expired", "wrong_host", "rogue"])
def test_bad_server_certificate(env, cert):
    pki = env.pki
    certfile, keyfile = getattr(pki, cert + "_cert"), getattr(pki, cert + "_key")
    with DevServer(env.www, certfile, keyfile) as server:
        r = run(env.device, server.url("firmware.bin"))
    assert not r["ok"] and r["reason"] == "tls_verify_failed", r


def test_untrusted_ca_on_device(env, web):
    r = run(env.device, web.url("firmware.bin"), opts={"ca_path": "other-ca.der"})
    assert r["reason"] == "tls_verify_failed", r


def test_tls_to_a_plain_http_port_is_tls_failed(env, web):
    url = "https://localhost:%d/firmware.bin" % web.http_port
    r = run(env.device, url)
    assert r["reason"] == "tls_failed", r


def test_connect_refused_and_missing_ca(env):
    r = run(env.device, "https://127.0.0.1:%d/x" % free_port())
    assert r["reason"] == "connect_failed", r
    r = run(env.device, "https://127.0.0.1:%d/x" % free_port(), opts={"ca_path": "none.der"})
    assert r["reason"] == "tls_failed", r


def test_bad_url_and_dns(env):
    assert run(env.device, "ftp://localhost/x")["reason"] == "bad_url"
    r = run(env.device, "https://no-such-host.invalid/x")
    assert r["reason"] == "dns_failed", r


def test_readinto_allocates_nothing_and_throughput(env, web, record_property):
    r = run(env.device, web.url("firmware.bin"), mode="measure")
    assert r["ok"] and r["bytes"] == SIZE, r
    mbps = SIZE / 1e6 / max(r["ms"], 1) * 1000
    record_property("gc_bytes_per_4k_readinto", r["alloc_per_chunk"])
    record_property("nginx_tls_MBps", round(mbps, 1))
    print("readinto: %s GC bytes per 4 KiB chunk; %.1f MB/s from nginx over TLS"
          % (r["alloc_per_chunk"], mbps), file=sys.stderr)
    assert r["alloc_per_chunk"] == 0


# The redirect bound of unit/test_boundaries_http.py (issue 15), in the real MicroPython binary.
def chain(dev, hops):
    dev.redirects = {"/r%d" % n: (302, "{origin}/r%d" % (n - 1)) for n in range(2, hops + 1)}
    dev.redirects["/r1"] = (302, "{origin}/firmware.bin")
    return dev.url("r%d" % hops)


def test_micropython_follows_exactly_max_redirects(env, dev):
    r = run(env.device, chain(dev, 5))
    assert r["ok"] and r["sha256"] == env.sha256 and r["final_url"].endswith("/firmware.bin"), r
    r = run(env.device, chain(dev, 6))
    assert not r["ok"] and r["reason"] == "too_many_redirects", r
    r = run(env.device, chain(dev, 2), opts={"max_redirects": 2})
    assert r["ok"], r
