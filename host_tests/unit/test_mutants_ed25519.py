# ota.ed25519, the mutants the RFC 8032 vectors and the tampering tests let through (session 21,
# docs/MUTATION.md): the two refusals that no honest signature ever reaches, each shown with the
# signature it exists to refuse.
#
# 1. Small-order public keys. The curve's group is Z/8 x Z/L: the 8 points of order 1, 2, 4 or 8 are
#    the keys [8]A = identity. With such a key, [k]A is the identity whenever ord(A) divides k, so the
#    signature (R = B, S = 1) verifies ([1]B - [k]A = B) for every message when A is the identity
#    and for one message in ord(A) otherwise: a forgery without any private key. verify() refuses
#    these keys outright (libsodium does the same); the test tries each of the 8 on 64 messages.
# 2. S == L exactly. RFC 8032 5.1.7: "if S >= L, reject". [L]B is the identity, so (R, L) verifies
#    wherever (R, 0) would. An honest (R, 0) needs k == -r/a (mod L), out of reach with a real hash,
#    so the test replaces the module's hash with one that gives k = 0: then (identity, 0) verifies,
#    and (identity, L) must not.
import binascii

import pytest

from ota import ed25519

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = ed25519._D
B_ENCODED = binascii.unhexlify("58" + "66" * 31)  # the base point: y = 4/5, x even
IDENTITY = (1).to_bytes(32, "little")

# The 8 points of small order (canonical encodings; libsodium's blocklist lists the same).
SMALL_ORDER = [binascii.unhexlify(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",  # order 1: the identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2: y = -1
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4: y = 0
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4, the other x
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa")]


def affine_add(a, b):
    # Textbook affine addition on -x^2 + y^2 = 1 + d x^2 y^2 (RFC 8032 5.1.4), exact mod p: an
    # independent check of the table above, not the module's formulas.
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P)


def order(point):
    q, n = point, 1
    while q != (0, 1):
        q, n = affine_add(q, point), n + 1
        assert n <= 8, "not a small-order point"
    return n


def test_the_eight_keys_are_the_small_order_points():
    points = [ed25519._decode_point(key) for key in SMALL_ORDER]
    assert sorted(order(p) for p in points) == [1, 2, 4, 4, 8, 8, 8, 8]
    assert len(set(points)) == 8


@pytest.mark.parametrize("key", SMALL_ORDER, ids=lambda k: binascii.hexlify(k[:4]).decode())
def test_no_small_order_key_verifies_the_keyless_forgery(key):
    forgery = B_ENCODED + (1).to_bytes(32, "little")
    accepted = [m for m in range(64) if ed25519.verify(key, b"release %d" % m, forgery)]
    assert accepted == []


def test_the_forgery_is_one_a_key_of_full_order_does_not_accept():
    # The same (B, 1) under an ordinary key: [k]A is never the identity, so it fails on the
    # comparison, not on a key check. (RFC 8032 TEST 1's public key.)
    key = binascii.unhexlify("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    forgery = B_ENCODED + (1).to_bytes(32, "little")
    assert not any(ed25519.verify(key, b"release %d" % m, forgery) for m in range(8))


@pytest.fixture
def k_is_zero(monkeypatch):
    monkeypatch.setattr(ed25519, "_hash", lambda data: bytes(64))


KEY = binascii.unhexlify("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def test_with_k_zero_the_identity_and_s_zero_verify(k_is_zero):
    # The setting of the next test works: [0]B - [0]A is the identity, encoded as R.
    assert ed25519.verify(KEY, b"m", IDENTITY + (0).to_bytes(32, "little")) is True
    assert ed25519.verify(KEY, b"m", IDENTITY + (1).to_bytes(32, "little")) is False


@pytest.mark.parametrize("s", [L, L + 1, 2 * L, 2**256 - 1])
def test_s_of_l_or_more_is_refused_even_where_it_would_verify(k_is_zero, s):
    # [L]B is the identity too: (identity, L) passes the comparison; only the S < L rule refuses it.
    assert ed25519.verify(KEY, b"m", IDENTITY + s.to_bytes(32, "little")) is False
