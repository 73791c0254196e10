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
