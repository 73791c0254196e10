# trigger.parse: the bad-payload matrix, each case -> its stable reason; and the SAME module run by
# the real MicroPython binary on the same payloads gives the same answers.
import json
import os
import subprocess

import pytest

from paths import LIB, MICROPYTHON, ROOT
from ota import trigger
from ota.errors import OtaError

SHA = "ab" * 32
URL = "https://fw.example.com/app-1.2.0.bin"


def j(obj):
    return json.dumps(obj).encode()


# (name, payload bytes, expected): expected is a reason code, None (ignored) or "ok".
CASES = [
    ("seed_minimal", b'{"type":"ota_trigger","url":"https://your-server.com/firmware.bin"}', "ok"),
    ("seed_http_dev", b'{"type":"ota_trigger","url":"http://192.168.1.100:8000/buttonsMeshIDF.bin"}', "ok"),
    ("full", j({"type": "ota_trigger", "url": URL, "sha256": SHA.upper(), "size": 1462272,
                "version": "1.2.0", "id": "job-42", "signature": "c2ln", "expires": 1767225600,
                "target": "a0b1c2d3e4f5", "extra": {"ignored": True}}), "ok"),
    ("revert", b'{"type":"ota_revert"}', "ok"),
    ("revert_with_id", b'{"type":"ota_revert","id":"r-1"}', "ok"),
    ("not_json", b"ON", "bad_json"),
    ("truncated_json", b'{"type":"ota_trigger","url":', "bad_json"),
    ("empty", b"", "bad_json"),
    ("not_utf8", b'{"type":"ota_trigger","url":"https://x/\xff\xfe"}', "bad_json"),
    # UTF-8 only, as on the device: CPython's json.loads would take these bytes (it guesses UTF-16 and
    # UTF-32), MicroPython's payload.decode() refuses them; the host's otactl must answer alike.
    ("utf16", '{"type":"ota_trigger","url":"https://x/fw.bin"}'.encode("utf-16"), "bad_json"),
    ("utf16le_no_bom", '{"type":"ota_trigger","url":"https://x/fw.bin"}'.encode("utf-16-le"), "bad_json"),
    ("json_array", b'["ota_trigger","https://x/fw.bin"]', "not_object"),
    ("json_string", b'"ota_trigger"', "not_object"),
    ("json_number", b"42", "not_object"),
    ("json_null", b"null", "not_object"),
    ("no_type", j({"url": URL}), None),
    ("unknown_type", j({"type": "switch_set", "state": "on"}), None),
    ("type_not_string", j({"type": 7, "url": URL}), None),
    ("type_list", j({"type": ["ota_trigger"], "url": URL}), None),
    ("missing_url", j({"type": "ota_trigger"}), "missing_url"),
    ("url_null", j({"type": "ota_trigger", "url": None}), "bad_url"),
    ("url_number", j({"type": "ota_trigger", "url": 42}), "bad_url"),
    ("ftp", j({"type": "ota_trigger", "url": "ftp://fw.example.com/fw.bin"}), "bad_url"),
    ("file", j({"type": "ota_trigger", "url": "file:///etc/passwd"}), "bad_url"),
    ("no_scheme", j({"type": "ota_trigger", "url": "fw.example.com/fw.bin"}), "bad_url"),
    ("no_host", j({"type": "ota_trigger", "url": "https:///fw.bin"}), "bad_url"),
    ("url_space", j({"type": "ota_trigger", "url": "https://x/a b.bin"}), "bad_url"),
    ("url_unicode", j({"type": "ota_trigger", "url": "https://bücher.example/fw.bin"}), "bad_url"),
    ("url_too_long", j({"type": "ota_trigger", "url": "https://x/" + "a" * 600}), "bad_url"),
    ("ten_kb", j({"type": "ota_trigger", "url": "https://x/" + "a" * 10240}), "too_long"),
    ("ten_kb_garbage", b"\xff" * 10240, "too_long"),
    ("sha_short", j({"type": "ota_trigger", "url": URL, "sha256": "abc"}), "bad_sha256_field"),
    ("sha_nonhex", j({"type": "ota_trigger", "url": URL, "sha256": "zz" * 32}), "bad_sha256_field"),
    ("sha_number", j({"type": "ota_trigger", "url": URL, "sha256": 12}), "bad_sha256_field"),
    ("size_negative", j({"type": "ota_trigger", "url": URL, "size": -1}), "bad_size"),
    ("size_zero", j({"type": "ota_trigger", "url": URL, "size": 0}), "bad_size"),
    ("size_true", j({"type": "ota_trigger", "url": URL, "size": True}), "bad_size"),
    ("size_float", j({"type": "ota_trigger", "url": URL, "size": 1.5}), "bad_size"),
    ("size_string", j({"type": "ota_trigger", "url": URL, "size": "100"}), "bad_size"),
    ("version_long", j({"type": "ota_trigger", "url": URL, "version": "1" * 40}), "bad_version"),
    ("version_empty", j({"type": "ota_trigger", "url": URL, "version": ""}), "bad_version"),
    ("version_number", j({"type": "ota_trigger", "url": URL, "version": 1.2}), "bad_version"),
    ("version_control", j({"type": "ota_trigger", "url": URL, "version": "1.2\n"}), "bad_version"),
    ("version_emoji", j({"type": "ota_trigger", "url": URL, "version": "1.2\U0001F600"}), "bad_version"),
    ("version_raw_utf8", '{"type":"ota_trigger","url":"%s","version":"\u00e9t\u00e9"}'.encode() % URL.encode(),
     "bad_version"),
    ("version_lone_surrogate", b'{"type":"ota_trigger","url":"%s","version":"\\ud800"}' % URL.encode(),
     "bad_version"),
    ("id_number", j({"type": "ota_trigger", "url": URL, "id": 42}), "bad_job_id"),
    ("id_long", j({"type": "ota_trigger", "url": URL, "id": "j" * 41}), "bad_job_id"),
    ("id_space", j({"type": "ota_trigger", "url": URL, "id": "job 1"}), "bad_job_id"),
    ("revert_bad_id", j({"type": "ota_revert", "id": ""}), "bad_job_id"),
    ("signature_number", j({"type": "ota_trigger", "url": URL, "signature": 5}), "bad_signature_field"),
    ("expires_string", j({"type": "ota_trigger", "url": URL, "expires": "tomorrow"}), "bad_expires"),
    ("expires_bool", j({"type": "ota_trigger", "url": URL, "expires": False}), "bad_expires"),
    ("target_list", j({"type": "ota_trigger", "url": URL, "target": ["a"]}), "bad_target"),
    # Nesting within the 1024-byte limit: CPython's parser recurses (RecursionError past ~1000
    # levels), MicroPython's keeps a stack on the GC heap (test_deep_nesting_on_a_small_heap).
    ("deep_unclosed", b"[" * 1020, "bad_json"),
    ("deep_balanced", b"[" * 500 + b"]" * 500, "not_object"),
    ("deep_objects", b'{"a":' * 170 + b"1" + b"}" * 170, None),
]


def outcome(payload):
    try:
        result = trigger.parse(payload)
    except OtaError as e:
        return e.reason
    return "ok" if result is not None else None


@pytest.mark.parametrize("name,payload,expected", CASES, ids=[c[0] for c in CASES])
def test_matrix_cpython(name, payload, expected):
    assert outcome(payload) == expected


def test_normalised_fields():
    msg = trigger.parse(CASES[2][1])
    assert msg == {"type": "ota_trigger", "url": URL, "sha256": SHA, "size": 1462272, "version": "1.2.0",
                   "id": "job-42", "signature": "c2ln", "expires": 1767225600, "target": "a0b1c2d3e4f5",
                   "allow_downgrade": False, "project": None, "seq": None}
    minimal = trigger.parse(CASES[0][1])
    assert minimal["sha256"] is None and minimal["size"] is None and minimal["id"] is None
    assert trigger.parse(b'{"type":"ota_revert"}') == {"type": "ota_revert", "id": None, "signature": None,
                                                       "expires": None, "target": None,
                                                       "allow_downgrade": False, "project": None,
                                                       "seq": None}
    assert trigger.parse(b'{"type":"ota_trigger","url":"https://h/f","allow_downgrade":true}')["allow_downgrade"]
    with pytest.raises(OtaError) as e:
        trigger.parse(b'{"type":"ota_trigger","url":"https://h/f","allow_downgrade":1}')
    assert e.value.reason == "bad_allow_downgrade"


def test_too_long_checked_before_parsing():
    # A valid JSON object just over the bound is refused by length, not by content.
    body = j({"type": "ota_trigger", "url": "https://x/" + "a" * 2000})
    with pytest.raises(OtaError) as e:
        trigger.parse(body)
    assert e.value.reason == "too_long" and str(len(body)) in e.value.detail
    with pytest.raises(OtaError) as e:
        trigger.parse(body, max_len=4096)
    assert e.value.reason == "bad_url"


def test_ftp_detail_names_the_scheme():
    with pytest.raises(OtaError) as e:
        trigger.parse(j({"type": "ota_trigger", "url": "ftp://x/fw.bin"}))
    assert "ftp" in e.value.detail


DRIVER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import json
from ota import trigger
from ota.errors import OtaError
with open(sys.argv[2]) as f:
    cases = json.load(f)
out = {}
for name, hexpayload in cases:
    payload = bytes.fromhex(hexpayload)
    try:
        r = trigger.parse(payload)
        out[name] = "ok" if r is not None else None
    except OtaError as e:
        out[name] = e.reason
print(json.dumps(out))
"""


def parse_on_micropython(tmp_path, cases, timeout=60):
    # trigger.parse of each (name, payload, _) in the real MicroPython binary: {name: "ok" or reason}.
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([[name, payload.hex()] for name, payload, _ in cases]))
    proc = subprocess.run([MICROPYTHON, str(driver), LIB, str(path)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.access(MICROPYTHON, os.X_OK), reason="no micropython binary")
def test_matrix_micropython_same_reasons(tmp_path):
    got = parse_on_micropython(tmp_path, CASES)
    expected = {name: exp for name, _, exp in CASES}
    assert got == expected
    # and the CPython answers are the same ones
    assert {name: outcome(payload) for name, payload, _ in CASES} == got


SMALL_HEAP_DRIVER = r"""
import sys, gc
sys.path.insert(0, sys.argv[1])
from ota import trigger
from ota.errors import OtaError
gc.collect()
free = gc.mem_free()
try:
    trigger.parse(b"[" * 500 + b"]" * 500)
    print("parsed", free)
except OtaError as e:
    print(e.reason, e.detail)
except MemoryError as e:
    print("escaped MemoryError", e)
print(trigger.parse(b'{"type":"ota_trigger","url":"https://x/fw.bin"}')["url"])
"""


@pytest.mark.skipif(not os.access(MICROPYTHON, os.X_OK), reason="no micropython binary")
def test_deep_nesting_on_a_small_heap(tmp_path):
    # 500 levels in 1000 bytes need more than the 23 KB left of a 32 KB heap (the parser's stack and
    # 500 lists). Found by the device fuzz: the MemoryError escaped the MQTT callback and dropped the
    # broker connection. It is a bad_json now, and the next trigger parses in the same heap.
    driver = tmp_path / "driver.py"
    driver.write_text(SMALL_HEAP_DRIVER)
    proc = subprocess.run([MICROPYTHON, "-X", "heapsize=32K", str(driver), os.path.join(ROOT, "lib")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert lines == ["bad_json payload nests too deeply to parse in the free heap", "https://x/fw.bin"], lines
