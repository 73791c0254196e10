"""ota.signature.check, what the session-21 run left: the numbers in the expired and expires_too_far
details (the message catalogue reads every number as "#", so it cannot see a wrong one). The operator
reads them to tell a skewed device clock from a stale trigger. CPython."""
import binascii

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import signature
from ota.errors import OtaError

NOW = 1767225600  # 2026-01-01, after signature.CLOCK_VALID_AFTER
KEY = binascii.unhexlify("22" * 32)


class Store:
    def highest(self, key):
        return 0

    def accept(self, key, seq):
        raise AssertionError("nothing may be accepted")


def _refusal(expires):
    trigger = {"type": "ota_trigger", "url": "https://fw.example/a.bin", "id": "j1", "seq": 1,
               "expires": expires, "signature": "ab" * 64}
    with pytest.raises(OtaError) as e:
        signature.check(trigger, {}, "dev", NOW, Store(), [KEY])
    return e.value.reason, e.value.detail


def test_expired_says_how_long_ago():
    assert _refusal(NOW - 90) == ("expired", "expired 90 s ago")


def test_expires_too_far_says_how_far_and_the_limit():
    ahead = signature.MAX_VALIDITY_S + 5
    assert _refusal(NOW + ahead) == \
        ("expires_too_far", "expires in %d s, more than %d" % (ahead, signature.MAX_VALIDITY_S))
