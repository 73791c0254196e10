# Signed triggers: the canonical message, otactl/signing.py (host) -> lib/ota/signature.py (device),
# the policy matrix (each refusal -> its reason code) under CPython, a subset of it under the real
# MicroPython binary with host-made signatures, and `otactl keys`.
import argparse
import binascii
import json
import os
import stat
import subprocess

import pytest

from paths import LIB, MICROPYTHON
from ota import signature, trigger
from ota.errors import OtaError
from otactl import cmd_keys, signing
from ota.errors import OtaError as HostError

NOW = 1767225600  # 2026-01-01
DEVICE = "a0b1c2d3e4f5"
SHA = "ab" * 32
BASE = {"type": "ota_trigger", "url": "https://fw.example.com/app-1.2.0.bin", "sha256": SHA,
        "size": 1462272, "version": "1.2.0", "id": "job-42"}
KEY = signing.generate_key()
OTHER_KEY = signing.generate_key()
KEYS = [binascii.unhexlify(signing.public_key_hex(KEY))]
POLICY = {"require_signature": True, "allow_downgrade": False}


def signed(**changes):
    fields = dict(BASE)
    options = {k: changes.pop(k) for k in ("expires_in", "target", "now", "allow_downgrade") if k in changes}
    fields.update(changes)
    options.setdefault("now", NOW)
    return signing.sign_trigger(fields, KEY, **options)


def device_view(message):
    # What the agent has: the device's parser on the JSON payload.
    return trigger.parse(json.dumps(message).encode())


class Store:
    # replay.Replay without its file: `seen` is the highest seq every key has accepted so far.
    def __init__(self, seen=0):
        self.seen, self.seqs = seen, {}

    def highest(self, key):
        return self.seqs.get(key, self.seen)

    def accept(self, key, seq):
        self.seqs[key] = seq


def check(message, policy=POLICY, device=DEVICE, now=NOW + 10, seen=0, keys=KEYS, store=None):
    return signature.check(message, policy, device, now, Store(seen) if store is None else store, keys)


def reason(message, **kwargs):
    with pytest.raises(OtaError) as e:
        check(message, **kwargs)
    return e.value.reason


def test_canonical_form_is_documented_bytes():
    message = dict(BASE, target="*", expires=NOW, allow_downgrade=True, sha256=SHA.upper(), extra="x",
                   seq=1767225600123, project="*")
    assert signature.canonical(message) == (
        b"ota-trigger-v2\ntype=ota_trigger\nurl=https://fw.example.com/app-1.2.0.bin\nsha256=" + SHA.encode()
        + b"\nsize=1462272\nversion=1.2.0\nid=job-42\ntarget=*\nexpires=1767225600\nallow_downgrade=1"
        + b"\nseq=1767225600123\nproject=*")
    assert signature.canonical({"type": "ota_revert", "id": "r-1"}) == (
        b"ota-trigger-v2\ntype=ota_revert\nurl=\nsha256=\nsize=\nversion=\nid=r-1\ntarget=\nexpires=\n"
        b"allow_downgrade=\nseq=\nproject=")
    assert signing.canonical(message) == signature.canonical(message)  # one implementation
    with pytest.raises(OtaError):
        signature.canonical(dict(BASE, version="1.2\nid=job-1"))


def test_sign_then_verify_through_the_device_parser():
    message = signed()
    assert len(message["signature"]) == 128 and message["expires"] == NOW + 3600
    assert message["target"] == "*"
    assert check(device_view(message)) is True
    assert signing.verify_trigger(message, signing.public_key_hex(KEY))
    assert not signing.verify_trigger(message, signing.public_key_hex(OTHER_KEY))
    assert len(json.dumps(message)) <= trigger.MAX_PAYLOAD


def test_sign_normalises_and_fills_in():
    message = signing.sign_trigger({k: v for k, v in BASE.items() if k != "id"} | {"sha256": SHA.upper()},
                                   KEY, now=NOW)
    assert message["id"].startswith("job-") and message["sha256"] == SHA
    assert check(device_view(message)) is True


def test_sign_refuses_what_a_device_would_refuse():
    with pytest.raises(HostError) as e:
        signing.sign_trigger(dict(BASE, url="ftp://x/fw.bin"), KEY, now=NOW)
    assert e.value.reason == "bad_trigger"
    with pytest.raises(HostError):
        signing.sign_trigger(BASE, KEY, target=",".join([DEVICE] * 20), now=NOW)  # target > 200 chars
    with pytest.raises(HostError) as e:
        signing.sign_trigger(BASE, KEY, expires_in=40 * 86400, now=NOW)
    assert e.value.reason == "bad_expires"


def test_sign_with_a_key_path(tmp_path):
    path = tmp_path / "k.pem"
    path.write_bytes(signing.private_key_pem(KEY))
    message = signing.sign_trigger(BASE, str(path), now=NOW)
    assert check(message) is True
    with pytest.raises(HostError) as e:
        signing.load_private_key(str(tmp_path / "missing.pem"))
    assert e.value.reason == "bad_key"


# (name, message, check() keyword arguments, expected reason or True/False)
def _matrix():
    good = signed()
    unsigned = dict(BASE)
    return [
        ("signed_ok", good, {}, True),
        ("unsigned_required", unsigned, {}, "unsigned"),
        ("unsigned_allowed", unsigned, {"policy": {"require_signature": False}}, False),
        ("wrong_key", signing.sign_trigger(BASE, OTHER_KEY, now=NOW), {}, "bad_signature"),
        ("second_key_ok", good, {"keys": [binascii.unhexlify(signing.public_key_hex(OTHER_KEY))] + KEYS}, True),
        ("no_keys", good, {"keys": []}, "no_signing_key"),
        ("short_signature", dict(good, signature="ab" * 10), {}, "bad_signature"),
        ("nonhex_signature", dict(good, signature="zz" * 64), {}, "bad_signature"),
        ("tampered_url", dict(good, url="https://evil.example.com/fw.bin"), {}, "bad_signature"),
        ("tampered_sha256", dict(good, sha256="cd" * 32), {}, "bad_signature"),
        ("tampered_version", dict(good, version="9.9.9"), {}, "bad_signature"),
        ("added_downgrade", dict(good, allow_downgrade=True), {}, "bad_signature"),
        ("tampered_not_required", dict(good, url="https://evil.example.com/fw.bin"),
         {"policy": {"require_signature": False}}, "bad_signature"),
        ("missing_id", dict(good, id=None), {}, "missing_id"),
        ("missing_expires", dict(good, expires=None), {}, "missing_expires"),
        ("clock_unset", good, {"now": None}, "clock_not_set"),
        ("clock_2000", good, {"now": 946684800 + 60}, "clock_not_set"),
        ("expired", good, {"now": NOW + 3600}, "expired"),
        ("expired_long_ago", good, {"now": NOW + 86400}, "expired"),
        ("too_far", signed(expires_in=31 * 86400), {"now": NOW - 60}, "expires_too_far"),
        ("other_target", signed(target="ffffffffffff"), {}, "wrong_target"),
        ("listed_target", signed(target="ffffffffffff," + DEVICE), {}, True),
        ("own_target", signed(target=DEVICE), {}, True),
        ("replayed", good, {"seen": good["seq"]}, "replayed"),
        ("older_seq", good, {"seen": good["seq"] + 1}, "replayed"),
        ("newer_seq", good, {"seen": good["seq"] - 1}, True),
        ("missing_seq", dict(good, seq=None), {}, "missing_seq"),
        ("tampered_seq", dict(good, seq=good["seq"] + 1000), {}, "bad_signature"),
        ("added_project", dict(good, project="*"), {}, "bad_signature"),
        ("revert_signed", signed(type="ota_revert", url=None, sha256=None, size=None, version=None), {}, True),
    ]


@pytest.mark.parametrize("case", _matrix(), ids=lambda case: case[0])
def test_policy_matrix(case):
    _, message, kwargs, expected = case
    if isinstance(expected, bool):
        assert check(message, **kwargs) is expected
    else:
        assert reason(message, **kwargs) == expected


def test_allow_downgrade_only_from_a_verified_trigger():
    message = signed(allow_downgrade=True)
    assert "allow_downgrade" in message
    verified = check(message)
    assert verified is True
    assert signature.allow_downgrade(message, POLICY, verified) is True
    assert signature.allow_downgrade(dict(BASE, allow_downgrade=True), POLICY, False) is False
    assert signature.allow_downgrade(signed(), POLICY, True) is False
    assert signature.allow_downgrade(BASE, {"allow_downgrade": True}, False) is True  # device config


def test_allow_downgrade_survives_the_device_parser():
    parsed = device_view(signed(allow_downgrade=True))
    assert "allow_downgrade" in parsed, parsed
    assert check(parsed) is True and signature.allow_downgrade(parsed, POLICY, True) is True


def test_target_matches():
    assert signature.target_matches(None, DEVICE) and signature.target_matches("*", DEVICE)
    assert signature.target_matches(DEVICE, DEVICE) and signature.target_matches("x," + DEVICE, DEVICE)
    assert not signature.target_matches("x", DEVICE) and not signature.target_matches(DEVICE[:-1], DEVICE)


def test_public_keys_from_config():
    hex_key = signing.public_key_hex(KEY)
    assert signature.public_keys({"signing_pubkey": hex_key}) == KEYS
    assert signature.public_keys({"signing_pubkey": None}) == []
    with pytest.raises(OtaError) as e:
        signature.public_keys({"signing_pubkey": "zz" * 32})
    assert e.value.reason == "bad_config"


def test_keys_generate_and_show(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cmd_keys.argparse_keys(parser)
    out = tmp_path / "keys"
    assert cmd_keys.do_keys(parser.parse_args(["generate", "--out", str(out)])) == 0
    private, public = out / cmd_keys.PRIVATE_NAME, out / cmd_keys.PUBLIC_NAME
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    hex_key = public.read_text().strip()
    assert len(hex_key) == 64 and signing.public_key_hex(signing.load_private_key(str(private))) == hex_key
    with pytest.raises(HostError) as e:  # never overwrites a key by accident
        cmd_keys.do_keys(parser.parse_args(["generate", "--out", str(out)]))
    assert e.value.reason == "exists"
    capsys.readouterr()
    cmd_keys.do_keys(parser.parse_args(["show", str(private)]))
    assert capsys.readouterr().out.strip() == hex_key
    # What `otactl keys generate` writes is what otactl provision's validator accepts.
    from ota import config
    config.validate(config.merge({"ota": {"signing_pubkey": hex_key, "require_signature": True}}))


# ---- the device side on the real MicroPython binary, with signatures made here -----------------
DRIVER = r"""
import sys, json, time
sys.path.insert(0, sys.argv[1])
from ota import signature
from ota.errors import OtaError
with open(sys.argv[2]) as f:
    spec = json.load(f)
keys = signature.public_keys({"signing_pubkey": spec["pubkey"]})
class Store:
    def __init__(self, seen):
        self.seen, self.seqs = seen, {}
    def highest(self, key):
        return self.seqs.get(key, self.seen)
    def accept(self, key, seq):
        self.seqs[key] = seq
for name, message, now, seen, policy in spec["cases"]:
    t = time.ticks_us()
    try:
        result = signature.check(message, policy, spec["device"], now, Store(seen), keys)
    except OtaError as e:
        result = e.reason
    print(json.dumps({"name": name, "result": result, "us": time.ticks_diff(time.ticks_us(), t)}))
"""

MP_CASES = ("signed_ok", "unsigned_required", "unsigned_allowed", "wrong_key", "tampered_url",
            "tampered_sha256", "added_downgrade", "clock_unset", "expired", "other_target", "listed_target",
            "replayed", "older_seq", "newer_seq", "missing_seq", "tampered_seq", "added_project",
            "revert_signed")


@pytest.mark.skipif(not os.access(MICROPYTHON, os.X_OK), reason="no micropython binary")
def test_micropython_verifies_host_signatures(tmp_path):
    cases, expected = [], {}
    for name, message, kwargs, result in _matrix():
        if name not in MP_CASES:
            continue
        cases.append((name, message, kwargs.get("now", NOW + 10), kwargs.get("seen", 0),
                      kwargs.get("policy", POLICY)))
        expected[name] = result
    # End to end: the signed payload goes through the device's parser on MicroPython too.
    spec = {"pubkey": signing.public_key_hex(KEY), "device": DEVICE, "cases": cases}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    run = subprocess.run([MICROPYTHON, "-c", DRIVER, LIB, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    got = {line["name"]: line["result"] for line in map(json.loads, run.stdout.splitlines())}
    assert got == expected


@pytest.mark.skipif(not os.access(MICROPYTHON, os.X_OK), reason="no micropython binary")
def test_micropython_parse_then_check(tmp_path):
    # The JSON bytes an operator publishes -> trigger.parse -> signature.check, all on MicroPython.
    payload = json.dumps(signed()).encode()
    tampered = json.dumps(dict(signed(), url="https://evil.example.com/fw.bin")).encode()
    script = r"""
import sys
sys.path.insert(0, sys.argv[1])
from ota import signature, trigger
from ota.errors import OtaError
class Store:
    def highest(self, key):
        return 0
    def accept(self, key, seq):
        pass
keys = signature.public_keys({"signing_pubkey": sys.argv[2]})
for path in sys.argv[3:]:
    with open(path, "rb") as f:
        payload = f.read()
    try:
        print(signature.check(trigger.parse(payload), {"require_signature": True}, "%s", %d, Store(), keys))
    except OtaError as e:
        print(e.reason)
""" % (DEVICE, NOW + 10)
    # Payloads go through files: the Unix port dies on a long argv string ("uncaught NLR").
    (tmp_path / "good.json").write_bytes(payload)
    (tmp_path / "tampered.json").write_bytes(tampered)
    run = subprocess.run([MICROPYTHON, "-c", script, LIB, signing.public_key_hex(KEY),
                          str(tmp_path / "good.json"), str(tmp_path / "tampered.json")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "bad_signature"]
