"""ota.signature where test_signature's policy matrix does not reach (pinned after `make mutate`): the
keys frozen into the firmware (module ota_keys), which no CPython test had. CPython."""
import binascii
import sys
import types

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import signature
from ota.errors import OtaError

FROZEN = "11" * 32
CONFIGURED = "22" * 32


@pytest.fixture
def frozen_keys(monkeypatch):
    # What a firmware with `ota_keys.py` frozen into it imports (docs/SIGNING.md).
    module = types.ModuleType("ota_keys")
    module.KEYS = (FROZEN,)
    monkeypatch.setitem(sys.modules, "ota_keys", module)
    return module


def test_frozen_keys_come_first_then_the_configured_one(frozen_keys):
    assert signature.public_keys({"signing_pubkey": CONFIGURED}) == [
        binascii.unhexlify(FROZEN), binascii.unhexlify(CONFIGURED)]
    assert signature.public_keys({"signing_pubkey": None}) == [binascii.unhexlify(FROZEN)]


def test_a_malformed_frozen_key_is_bad_config(frozen_keys):
    frozen_keys.KEYS = ("ab" * 31,)
    with pytest.raises(OtaError) as e:
        signature.public_keys({})
    assert e.value.reason == "bad_config"


def test_without_ota_keys_only_the_configured_key():
    assert "ota_keys" not in sys.modules
    assert signature.public_keys({"signing_pubkey": CONFIGURED}) == [binascii.unhexlify(CONFIGURED)]


class Store:
    def highest(self, key):
        return 0

    def accept(self, key, seq):
        raise AssertionError("nothing may be accepted")


@pytest.mark.parametrize("text", ["ab" * 63, "ab" * 65, "a" * 127, "zz" * 64])
def test_a_signature_of_the_wrong_shape_is_refused_before_anything_else(text):
    # bad_signature comes before missing_id/missing_expires/...: a malformed signature is named as
    # such, whatever else the trigger lacks, and costs no verification.
    trigger = {"type": "ota_trigger", "url": "https://fw.example/a.bin", "signature": text}
    with pytest.raises(OtaError) as e:
        signature.check(trigger, {}, "dev", 1767225600, Store(), [binascii.unhexlify(CONFIGURED)])
    assert e.value.reason == "bad_signature"


def _reason(now, expires):
    # A trigger complete in every field but its signature (64 zero bytes verify with no key), so the
    # reason says how far check() got: bad_signature is "every earlier rule passed".
    trigger = {"type": "ota_trigger", "url": "https://fw.example/a.bin", "signature": "00" * 64,
               "id": "job-1", "expires": expires, "seq": 7}
    with pytest.raises(OtaError) as e:
        signature.check(trigger, {}, "dev", now, Store(), [binascii.unhexlify(CONFIGURED)])
    return e.value.reason


def test_the_clock_counts_as_set_from_the_first_second_of_2024():
    now = signature.CLOCK_VALID_AFTER
    assert _reason(now, now + 60) == "bad_signature"
    assert _reason(now - 1, now + 60) == "clock_not_set"
    assert _reason(None, now + 60) == "clock_not_set"


def test_validity_up_to_max_validity_s_exactly():
    now = 1767225600
    assert _reason(now, now + signature.MAX_VALIDITY_S) == "bad_signature"
    assert _reason(now, now + signature.MAX_VALIDITY_S + 1) == "expires_too_far"
    assert _reason(now, now + 1) == "bad_signature"
    assert _reason(now, now) == "expired"
