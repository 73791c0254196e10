"""ota.trigger's optional fields and URL rules where test_trigger's matrix and test_boundaries_device's
limits do not reach (pinned after `make mutate`): project, seq, allow_downgrade, what parse() keeps,
the scheme and host checks. CPython; test_trigger runs the same payloads on MicroPython."""
import json

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import signature, trigger
from ota.errors import OtaError

URL = "https://fw.example.com/app.bin"


def parse(**fields):
    msg = {"type": "ota_trigger", "url": URL}
    msg.update(fields)
    return trigger.parse(json.dumps(msg).encode())


def reason(**fields):
    with pytest.raises(OtaError) as e:
        parse(**fields)
    return e.value.reason


def test_absent_optional_fields_are_none_or_false():
    out = parse()
    assert out == {"type": "ota_trigger", "url": URL, "sha256": None, "size": None, "version": None,
                   "id": None, "signature": None, "expires": None, "target": None,
                   "allow_downgrade": False, "project": None, "seq": None}


def test_every_field_is_kept_as_sent():
    fields = {"sha256": "AB" * 32, "size": 7, "version": "1.2.0", "id": "job-1", "signature": "s" * 128,
              "expires": 1767225600, "target": "dev1,dev2", "allow_downgrade": True,
              "project": "micropython", "seq": 42}
    out = parse(**fields)
    for name, value in fields.items():
        assert out[name] == (value.lower() if name == "sha256" else value), name


@pytest.mark.parametrize("project", ["micropython", "*", "p" * 31, "a-b_c.d"])
def test_project_kept(project):
    assert parse(project=project)["project"] == project


@pytest.mark.parametrize("project", ["", "p" * 32, "my project", 7, ["micropython"], "caf\u00e9", True])
def test_project_refused(project):
    assert reason(project=project) == "bad_project"


@pytest.mark.parametrize("seq", [1, trigger.MAX_SEQ, 1767225600123])
def test_seq_kept(seq):
    assert parse(seq=seq)["seq"] == seq


@pytest.mark.parametrize("seq", [0, -1, trigger.MAX_SEQ + 1, True, 1.0, "5"])
def test_seq_refused(seq):
    assert reason(seq=seq) == "bad_seq"


@pytest.mark.parametrize("flag", [True, False])
def test_allow_downgrade_kept(flag):
    assert parse(allow_downgrade=flag)["allow_downgrade"] is flag


@pytest.mark.parametrize("flag", [1, 0, "true", None])
def test_allow_downgrade_must_be_a_bool(flag):
    assert reason(allow_downgrade=flag) == "bad_allow_downgrade"


@pytest.mark.parametrize("expires", [0, 1, 2**40])
def test_expires_from_zero(expires):
    assert parse(expires=expires)["expires"] == expires


@pytest.mark.parametrize("expires", [-1, True, 1.5, "1"])
def test_expires_refused(expires):
    assert reason(expires=expires) == "bad_expires"


def test_revert_keeps_the_shared_fields_only():
    out = trigger.parse(json.dumps({"type": "ota_revert", "id": "r-1", "seq": 3, "project": "p",
                                    "url": "https://ignored/x"}).encode())
    assert out["type"] == "ota_revert" and out["id"] == "r-1" and out["seq"] == 3 and out["project"] == "p"
    assert "url" not in out and "sha256" not in out


@pytest.mark.parametrize("url", ["https://a", "http://a", "HTTPS://fw.example/x", "Http://a/b?c#d",
                                 "https://a:1", "https://a/get?from=ftp://b/x"])  # the first "://" counts
def test_urls_kept(url):
    assert parse(url=url)["url"] == url


@pytest.mark.parametrize("url", ["https://", "https:///x", "https://?q", "https://#f", "://a/x", "https:/a",
                                 "httpss://a", "ftp://a", "", "https//a", "x" * 20, "httpsx", "httpx"])
def test_urls_refused(url):
    assert reason(url=url) == "bad_url"


def test_url_of_exactly_the_limit():
    url = "https://a/" + "x" * (512 - len("https://a/"))
    assert parse(url=url)["url"] == url
    assert reason(url=url + "x") == "bad_url"


def test_sha256_case_and_shape():
    assert parse(sha256="Ab" * 32)["sha256"] == "ab" * 32
    for bad in ("ab" * 31, "ab" * 33, "ag" * 32, 5, ["ab" * 32]):
        assert reason(sha256=bad) == "bad_sha256_field", bad


def test_max_len_counts_the_payload_exactly():
    payload = json.dumps({"type": "ota_trigger", "url": URL}).encode()
    assert trigger.parse(payload, max_len=len(payload))["url"] == URL
    with pytest.raises(OtaError) as e:
        trigger.parse(payload, max_len=len(payload) - 1)
    assert e.value.reason == "too_long"


def test_printable_means_0x21_to_0x7e():
    # "!" and "~" are the first and last printable characters without the space.
    assert parse(version="!~", id="!", target="~")["version"] == "!~"
    for bad in (" ", "1 0", "\x7f", "\x1f", "1\t"):
        assert reason(version=bad) == "bad_version", repr(bad)
        assert reason(id=bad) == "bad_job_id", repr(bad)


def test_no_kept_field_takes_a_space():
    # One rule for every string field (session 21 removed _short_string's never-passed allow_space):
    # a target list is split at "," alone, so "a, b" would name a device " b" that never matches.
    assert signature.target_matches("dev1,dev2", "dev2")
    for field, value, code in (("target", "dev1, dev2", "bad_target"), ("target", " dev1", "bad_target"),
                               ("project", "micro python", "bad_project"),
                               ("signature", "ab cd", "bad_signature_field"),
                               ("version", "1.2.0 ", "bad_version"), ("id", "job 1", "bad_job_id"),
                               ("url", URL + "?a b", "bad_url")):
        assert reason(**{field: value}) == code, (field, value)
        assert parse(**{field: value.replace(" ", "")})[field] == value.replace(" ", ""), field


def test_only_slash_question_mark_or_hash_right_after_the_scheme_means_no_host():
    # Any other first character starts the host, a capital letter too (hosts are case-blind).
    assert parse(url="https://X.example.com/fw.bin")["url"] == "https://X.example.com/fw.bin"
    for bad in ("https:///fw.bin", "https://?a", "https://#a", "https://"):
        assert reason(url=bad) == "bad_url", bad
