# The trigger's artifact fields (lib/ota/artifact.py, docs/COMPRESSED.md): parsed strictly, absent
# from a plain trigger (which parses and signs exactly as before), and covered by the signature.
import binascii
import json
import os
import sys

import pytest

from paths import ROOT
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "lib"))
from ota import artifact, signature, trigger
from ota.errors import OtaError
from otactl import signing

SHA = "ab" * 32
PLAIN = {"type": "ota_trigger", "url": "https://fw.example.com/fw-1.2.0.bin", "sha256": SHA,
         "size": 1462272, "version": "1.2.0", "id": "job-42"}
DELTA = dict(PLAIN, url="https://fw.example.com/fw-1.1.0-1.2.0.otaz", encoding="delta",
             file_sha256="cd" * 32, file_size=2800, base_sha256="ef" * 32,
             fallback="https://fw.example.com/fw-1.2.0.otaz", fallback_encoding="deflate")
NOW = 1767225600


def parse(message):
    return trigger.parse(json.dumps(message).encode())


def reason(message):
    with pytest.raises(OtaError) as e:
        parse(message)
    return e.value.reason


def test_plain_trigger_has_no_artifact_fields():
    got = parse(PLAIN)
    assert not set(trigger.ENCODING_FIELDS) & set(got)
    assert artifact.of(got) is None
    assert signature.canonical(got).startswith(b"ota-trigger-v2\n")


def test_delta_trigger_parses_every_field():
    got = parse(DELTA)
    assert artifact.of(got) == {"encoding": "delta", "file_sha256": "cd" * 32, "file_size": 2800,
                                "base_sha256": "ef" * 32, "fallback": DELTA["fallback"],
                                "fallback_encoding": "deflate"}
    assert len(json.dumps(dict(DELTA, signature="00" * 64, seq=NOW * 1000, expires=NOW, target="*"))) < 1024


@pytest.mark.parametrize("change,why", [
    ({"encoding": "gzip"}, "bad_encoding"),
    ({"encoding": None, "file_size": 3}, "bad_encoding"),  # a field without encoding
    ({"base_sha256": None}, "bad_encoding"),  # a delta needs its base
    ({"file_sha256": "xyz"}, "bad_sha256_field"),
    ({"base_sha256": "ab" * 31}, "bad_sha256_field"),
    ({"file_size": 0}, "bad_size"),
    ({"file_size": True}, "bad_size"),
    ({"fallback": "ftp://x/y"}, "bad_url"),
    ({"fallback_encoding": "delta"}, "bad_encoding"),
    ({"fallback": None}, "bad_encoding"),  # fallback_encoding without a fallback
])
def test_bad_artifact_fields_have_reasons(change, why):
    message = dict(DELTA)
    for key, value in change.items():
        if value is None:
            message.pop(key)
        else:
            message[key] = value
    assert reason(message) == why


def test_plain_signature_is_unchanged_by_the_new_fields():
    # A trigger signed before these fields existed still verifies: version 2, same bytes.
    assert signature.canonical(dict(PLAIN, target="*", expires=NOW, seq=1)) == (
        b"ota-trigger-v2\ntype=ota_trigger\nurl=https://fw.example.com/fw-1.2.0.bin\nsha256=" + SHA.encode()
        + b"\nsize=1462272\nversion=1.2.0\nid=job-42\ntarget=*\nexpires=1767225600\nallow_downgrade="
        + b"\nseq=1\nproject=")


def test_encoded_trigger_signs_version_3_with_every_artifact_field():
    text = signature.canonical(parse(DELTA)).decode()
    lines = text.split("\n")
    assert lines[0] == "ota-trigger-v3"
    assert lines[-6:] == ["encoding=delta", "file_sha256=" + "cd" * 32, "file_size=2800",
                          "base_sha256=" + "ef" * 32, "fallback=" + DELTA["fallback"],
                          "fallback_encoding=deflate"]


@pytest.mark.parametrize("field,value", [("encoding", "deflate"), ("file_sha256", "00" * 32),
                                         ("file_size", 2801), ("base_sha256", "11" * 32),
                                         ("fallback", "https://evil.example.com/x.bin"),
                                         ("fallback_encoding", None)])
def test_changing_any_artifact_field_breaks_the_signature(field, value):
    key = signing.generate_key()
    signed = signing.sign_trigger(dict(DELTA), key, now=NOW)
    public = binascii.unhexlify(signing.public_key_hex(key))
    assert signing.verify_trigger(parse(signed) | {"signature": signed["signature"]}, public)
    forged = dict(signed)
    if value is None:
        forged.pop(field)
    else:
        forged[field] = value
    if field == "encoding":
        forged.pop("base_sha256")  # still a valid deflate trigger for the parser
        forged.pop("fallback"), forged.pop("fallback_encoding")
    got = parse(forged)
    with pytest.raises(OtaError) as e:
        signature.check(got, {"require_signature": True}, "a0b1c2d3e4f5", NOW + 10, _Store(), [public])
    assert e.value.reason == "bad_signature"


class _Store:
    def highest(self, key):
        return 0

    def accept(self, key, seq):
        pass


def test_the_job_passes_the_artifact_to_update_run_only_when_encoded(monkeypatch):
    import types

    # jobrun imports machine and esp32: stand-ins while it is imported here, and this import of it
    # leaves with them (test_agent_unit imports it with its own fakes).
    monkeypatch.setitem(sys.modules, "machine", types.ModuleType("machine"))
    monkeypatch.setitem(sys.modules, "esp32", types.ModuleType("esp32"))
    had = sys.modules.pop("ota.jobrun", None)
    try:
        from ota import jobrun

        assert jobrun._artifact(parse(PLAIN)) == {}  # update.run is called exactly as before
        assert jobrun._artifact(parse(DELTA)) == {"artifact": artifact.of(parse(DELTA))}
    finally:
        import ota

        sys.modules.pop("ota.jobrun", None)
        if had is not None:
            sys.modules["ota.jobrun"] = had
            ota.jobrun = had
        elif hasattr(ota, "jobrun"):
            del ota.jobrun
