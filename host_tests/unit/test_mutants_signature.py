"""ota.signature where test_signature's policy matrix does not reach (pinned after `make mutate`): the
keys frozen into the firmware (module ota_keys), which no CPython test had; the order of the checks
and their bounds; the replay floor per key, and that a trigger stale for every key costs no
verification (about a second on a C3). CPython."""
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


def test_a_newline_in_a_signed_field_is_bad_signature():
    with pytest.raises(OtaError) as e:
        signature.canonical({"type": "ota_trigger", "url": "https://a/b", "id": "a\nseq=9"})
    assert e.value.reason == "bad_signature"


# ---- replay: the highest seq per key ---------------------------------------------------------------

NOW = 1767225600


class KeyStore:
    # replay.Replay's interface without its file: the highest seq per key id, 0 for a key never seen.
    def __init__(self, seqs):
        self.seqs = dict(seqs)

    def highest(self, name):
        return self.seqs.get(name, 0)

    def accept(self, name, seq):
        self.seqs[name] = seq


def _two_keys():
    from otactl import signing
    from ota.replay import key_id

    private = [signing.generate_key(), signing.generate_key()]
    public = [binascii.unhexlify(signing.public_key_hex(k)) for k in private]
    return private, public, [key_id(k) for k in public]


def _signed(private_key, seq):
    from otactl import signing

    fields = {"type": "ota_trigger", "url": "https://fw.example/a.bin", "sha256": "ab" * 32, "size": 4096,
              "id": "job-%d" % seq}
    return signing.sign_trigger(fields, private_key, now=NOW, seq=seq)


def test_each_key_has_its_own_floor():
    private, public, ids = _two_keys()
    store = KeyStore({ids[0]: 10})
    # Signed by the second key, which has accepted nothing: 5 is new for it.
    assert signature.check(_signed(private[1], 5), {}, "dev", NOW + 1, store, public) is True
    assert store.seqs == {ids[0]: 10, ids[1]: 5}
    # Signed by the first: 5 and 10 are not above its 10, although the floor over both keys is lower.
    for seq in (5, 10):
        with pytest.raises(OtaError) as e:
            signature.check(_signed(private[0], seq), {}, "dev", NOW + 1, store, public)
        assert e.value.reason == "replayed"
    assert store.seqs == {ids[0]: 10, ids[1]: 5}
    assert signature.check(_signed(private[0], 11), {}, "dev", NOW + 1, store, public) is True
    assert store.seqs == {ids[0]: 11, ids[1]: 5}


@pytest.mark.parametrize("seq", [3, 7])
def test_stale_for_every_key_is_refused_without_a_verification(seq, monkeypatch):
    from ota import ed25519

    private, public, ids = _two_keys()
    store = KeyStore({ids[0]: 9, ids[1]: 7})
    trigger = _signed(private[0], seq)

    def no_verification(*args):
        raise AssertionError("a verification was spent on a replayed trigger")

    monkeypatch.setattr(ed25519, "verify", no_verification)
    with pytest.raises(OtaError) as e:
        signature.check(trigger, {}, "dev", NOW + 1, store, public)
    assert e.value.reason == "replayed"


@pytest.mark.parametrize("field", ["sha256", "file_sha256", "base_sha256"])
def test_hex_digests_sign_as_the_device_sees_them_lowercased(field):
    # trigger.parse lowercases the three digests; canonical() must sign those same bytes, so a
    # trigger written with upper-case hex verifies on the device (signature.canonical__mutmut_30..33).
    digest = "AB" * 32
    trigger = {"type": "ota_trigger", "url": "https://h/f.bin", "encoding": "ota-deflate", field: digest}
    lowered = dict(trigger, **{field: digest.lower()})
    signed = signature.canonical(trigger)
    assert signed == signature.canonical(lowered)
    assert (field + "=" + "ab" * 32).encode() in signed.split(b"\n")
