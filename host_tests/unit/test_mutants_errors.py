"""ota.errors: the reason codes an OSError becomes, the errno sign MicroPython's TLS layer flips, the
traceback an unexpected exception leaves on the console, and OtaError's own text and args (pinned
after `make mutate`: no CPython test reached errno_of, from_oserror or unexpected). CPython."""
import errno
import pickle
import sys

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import errors
from ota.errors import OtaError


def test_str_is_the_reason_then_the_detail():
    assert str(OtaError("timeout")) == "timeout"
    assert OtaError("timeout").detail == ""
    assert str(OtaError("bad_url", "no host")) == "bad_url: no host"
    assert str(OtaError("bad_url", "")) == "bad_url"


@pytest.mark.parametrize("args", [("bad_url", "no host"), ("timeout",)])
def test_an_error_survives_a_copy_with_its_reason_and_detail(args):
    # Exceptions are rebuilt from their args (pickle, copy, a process pool in otactl).
    e = OtaError(*args)
    for copy in (pickle.loads(pickle.dumps(e)), errors.OtaError(*e.args)):
        assert (copy.reason, copy.detail, str(copy)) == (e.reason, e.detail, str(e))
    assert e.args == (args[0], args[1] if len(args) > 1 else "")


@pytest.mark.parametrize("exc, code", [
    (TimeoutError(), errno.ETIMEDOUT),  # CPython's socket timeout: errno None
    (OSError(errno.ENOMEM), errno.ENOMEM),
    (OSError(errno.ECONNRESET, "reset"), errno.ECONNRESET),  # the code is args[0], not the text
    (OSError(-errno.ETIMEDOUT), errno.ETIMEDOUT),  # the TLS layer's flipped sign
    (OSError(-errno.ECONNRESET), errno.ECONNRESET),
    (OSError(-255), 255),  # the last flipped
    (OSError(-256), -256),  # an mbedTLS code (MBEDTLS_ERR_...), not an errno: kept
    (OSError(-0x7880), -0x7880),
    (OSError(0), 0),
    (OSError(), None),
    (OSError("no code"), None),
])
def test_errno_of(exc, code):
    assert errors.errno_of(exc) == code


@pytest.mark.parametrize("exc, reason", [
    (OSError(errno.ENOMEM), "low_memory"),
    (OSError(-errno.ENOMEM), "low_memory"),
    (OSError(errno.ETIMEDOUT), "timeout"),
    (TimeoutError("timed out"), "timeout"),
    (OSError(-errno.ETIMEDOUT), "timeout"),
    (OSError(errno.ECONNRESET), "io_error"),
    (OSError(), "io_error"),
])
def test_from_oserror_reasons(exc, reason):
    e = errors.from_oserror(exc)
    assert isinstance(e, OtaError) and e.reason == reason


def test_from_oserror_io_error_keeps_the_os_text():
    e = errors.from_oserror(OSError(errno.ECONNRESET, "reset by peer"))
    assert e.reason == "io_error" and "reset by peer" in e.detail


def _boom():
    raise ValueError("boom")


def test_unexpected_prints_the_whole_traceback_and_becomes_internal_error(capsys):
    try:
        _boom()
    except ValueError as exc:
        e = errors.unexpected(exc)
    assert e.reason == "internal_error" and e.detail == "ValueError: boom"
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_boom" in err  # where it happened
    assert err.rstrip().endswith("ValueError: boom")


def test_unexpected_uses_micropythons_print_exception_when_there_is_one(monkeypatch):
    printed = []
    monkeypatch.setattr(sys, "print_exception", printed.append, raising=False)
    exc = KeyError("k")
    assert errors.unexpected(exc).reason == "internal_error"
    assert printed == [exc]


def test_an_error_without_a_detail_is_its_reason_alone():
    # What the state topic and the console show for a reason that needs no words.
    e = OtaError("low_memory")
    assert (e.detail, str(e)) == ("", "low_memory")
