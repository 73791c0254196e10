# ota.artifact.parse and .of directly (test_artifact_trigger.py goes through trigger.parse): each
# field's rule at its bound, with the reason code an operator sees (docs/COMPRESSED.md).
import pytest

from ota import artifact, trigger
from ota.errors import OtaError

SHA = "ab" * 32
NAMES = ("encoding", "file_sha256", "file_size", "base_sha256", "fallback", "fallback_encoding")


def parse(**msg):
    out = {}
    artifact.parse(msg, out)
    return out


def reason(**msg):
    with pytest.raises(OtaError) as e:
        parse(**msg)
    return e.value


def test_the_field_names_are_the_triggers():
    assert trigger.ENCODING_FIELDS == NAMES
    assert artifact.ENCODINGS == ("deflate", "delta")


def test_no_encoding_leaves_out_untouched():
    out = {"url": "kept"}
    artifact.parse({"url": "x"}, out)
    assert out == {"url": "kept"}


@pytest.mark.parametrize("name", NAMES[1:])
def test_each_field_without_encoding_is_refused(name):
    e = reason(**{name: "deflate" if name == "fallback_encoding" else SHA})
    assert e.reason == "bad_encoding" and e.detail == "%s without encoding" % name


@pytest.mark.parametrize("encoding", ["gzip", "", "Deflate", 1])
def test_unknown_encodings(encoding):
    e = reason(encoding=encoding)
    assert e.reason == "bad_encoding" and "deflate, delta" in e.detail


def test_deflate_with_nothing_else_fills_every_field():
    assert parse(encoding="deflate") == {"encoding": "deflate", "file_sha256": None, "file_size": None,
                                         "base_sha256": None, "fallback": None, "fallback_encoding": None}


def test_every_field_kept():
    got = parse(encoding="delta", file_sha256="CD" * 32, file_size=1, base_sha256="EF" * 32,
                fallback="https://fw.example/a.bin", fallback_encoding="deflate")
    assert got == {"encoding": "delta", "file_sha256": "cd" * 32, "file_size": 1, "base_sha256": "ef" * 32,
                   "fallback": "https://fw.example/a.bin", "fallback_encoding": "deflate"}


@pytest.mark.parametrize("size", [0, -1, True, False, "5", 5.0])
def test_file_size_must_be_a_positive_int(size):
    e = reason(encoding="deflate", file_size=size)
    assert e.reason == "bad_size"


@pytest.mark.parametrize("field", ["file_sha256", "base_sha256"])
@pytest.mark.parametrize("value", ["ab" * 31, "zz" * 32, 5])
def test_hashes_are_64_hex(field, value):
    assert reason(encoding="deflate", **{field: value}).reason == "bad_sha256_field"


def test_a_delta_needs_its_base():
    e = reason(encoding="delta")
    assert e.reason == "bad_encoding" and "base_sha256" in e.detail
    assert parse(encoding="delta", base_sha256=SHA)["base_sha256"] == SHA
    assert parse(encoding="deflate", base_sha256=SHA)["base_sha256"] == SHA


def test_fallback_is_a_url():
    assert reason(encoding="delta", base_sha256=SHA, fallback="ftp://x/y").reason == "bad_url"
    assert reason(encoding="delta", base_sha256=SHA, fallback=5).reason == "bad_url"


def test_fallback_encoding_is_deflate_with_a_fallback():
    url = "https://fw.example/a.otaz"
    assert parse(encoding="delta", base_sha256=SHA, fallback=url, fallback_encoding="deflate")[
        "fallback_encoding"] == "deflate"
    assert parse(encoding="delta", base_sha256=SHA, fallback=url)["fallback_encoding"] is None
    for bad in ({"fallback": url, "fallback_encoding": "delta"}, {"fallback_encoding": "deflate"},
                {"fallback": url, "fallback_encoding": ""}):
        e = reason(encoding="delta", base_sha256=SHA, **bad)
        assert e.reason == "bad_encoding" and "fallback_encoding" in e.detail


def test_of_a_job():
    assert artifact.of({}) is None
    assert artifact.of({"encoding": None, "file_size": 3}) is None
    assert artifact.of({"encoding": ""}) is None
    job = {"url": "u", "encoding": "deflate", "file_size": 3}
    assert artifact.of(job) == {"encoding": "deflate", "file_sha256": None, "file_size": 3,
                                "base_sha256": None, "fallback": None, "fallback_encoding": None}
