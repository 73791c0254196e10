# lib/ota/ed25519.py (and lib/ota/sha512.py): RFC 8032 section 7.1 test vectors, signatures made by
# `cryptography`, tampering, malformed input; under CPython AND the real MicroPython binary (one
# process for all the MicroPython cases: a verify there takes milliseconds, the start-up more).
import binascii
import hashlib
import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paths import LIB, MICROPYTHON
from ota import ed25519, sha512

L = 2**252 + 27742317777372353535851937790883648493
P = 2**255 - 19
u = binascii.unhexlify

_MSG_1024 = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0"
)

# RFC 8032 7.1: (name, secret key, public key, message, signature), all hex.
VECTORS = [
    ("TEST 1", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
     "d25bf5f0595bbe24655141438e7a100b"),
    ("TEST 2", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c"
     "387b2eaeb4302aeeb00d291612bb0c00"),
    ("TEST 3", "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc659"
     "4a7c15e9716ed28dc027beceea1ec40a"),
    ("TEST 1024", "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
     "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e", _MSG_1024,
     "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b"
     "5e8fcd4f681e30a6ac00a9704a188a03"),
    ("TEST SHA(abc)", "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd"
     "454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e030"
     "3dca179c138ac17ad9bef1177331a704"),
]


def raw_public(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def flip(data, bit):
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def with_s(signature, s):
    return signature[:32] + s.to_bytes(32, "little")


def test_vectors_are_transcribed_right():
    # `cryptography` derives the same public key and (deterministic) signature from each secret key.
    assert len(u(_MSG_1024)) == 1023
    for name, secret, public, message, signature in VECTORS:
        key = Ed25519PrivateKey.from_private_bytes(u(secret))
        assert raw_public(key) == u(public), name
        assert key.sign(u(message)) == u(signature), name


@pytest.mark.parametrize("vector", VECTORS, ids=[v[0] for v in VECTORS])
def test_rfc8032_vectors(vector):
    name, _, public, message, signature = vector
    assert ed25519.verify(u(public), u(message), u(signature)) is True
    assert ed25519.verify(u(public), u(message) + b"\x00", u(signature)) is False
    assert ed25519.verify(u(public), u(message), flip(u(signature), 0)) is False


def test_cryptography_signatures_and_tampering():
    for i in range(20):
        key = Ed25519PrivateKey.generate()
        public = raw_public(key)
        message = os.urandom(i * 13)
        signature = key.sign(message)
        assert ed25519.verify(public, message, signature)
        assert ed25519.verify(bytearray(public), bytearray(message), bytearray(signature))
        for bit in (0, 7, 100, 255, 256, 300, 511):  # R and S halves
            assert not ed25519.verify(public, message, flip(signature, bit))
        for bit in (0, 128, 254, 255):  # 255: the sign bit of x
            assert not ed25519.verify(flip(public, bit), message, signature)
        if message:
            assert not ed25519.verify(public, flip(message, len(message) * 8 - 1), signature)
        assert not ed25519.verify(raw_public(Ed25519PrivateKey.generate()), message, signature)


def test_non_canonical_s_is_rejected():
    # S + L verifies mathematically ([S+L]B = [S]B) but RFC 8032 demands S < L: malleability.
    key = Ed25519PrivateKey.generate()
    message = b"ota"
    signature = key.sign(message)
    s = int.from_bytes(signature[32:], "little")
    assert ed25519.verify(raw_public(key), message, signature)
    assert not ed25519.verify(raw_public(key), message, with_s(signature, s + L))
    assert not ed25519.verify(raw_public(key), message, with_s(signature, L))
    assert not ed25519.verify(raw_public(key), message, with_s(signature, 2**256 - 1))


def test_bad_input_is_false_not_an_exception():
    key = Ed25519PrivateKey.generate()
    public, signature = raw_public(key), key.sign(b"m")
    for args in [
        (public[:31], b"m", signature), (public + b"\x00", b"m", signature),
        (public, b"m", signature[:63]), (public, b"m", signature + b"\x00"),
        (b"", b"m", b""), (None, b"m", signature), (public, None, signature), (public, "m", signature),
        ("x" * 32, b"m", signature), (public, b"m", "x" * 64),
    ]:
        assert ed25519.verify(*args) is False


def test_small_order_key_forgery_is_refused():
    # With A of order 4 (all-zero key) and the all-zero signature (R of order 4, S = 0),
    # cofactorless verification would accept every message whose k is a multiple of 4.
    accepted = [m for m in range(40) if ed25519.verify(bytes(32), bytes([m]), bytes(64))]
    assert accepted == []


def test_invalid_and_small_order_points():
    signature = Ed25519PrivateKey.generate().sign(b"m")
    not_canonical_y = (P + 1).to_bytes(32, "little")  # y >= p: RFC 8032 decoding fails
    all_ones = b"\xff" * 31 + b"\x7f"
    x_zero_with_sign = (1 | 1 << 255).to_bytes(32, "little")  # y = 1 -> x = 0, sign bit set
    not_on_curve = (2).to_bytes(32, "little")  # y = 2: (y^2-1)/(d y^2+1) is not a square
    identity = (1).to_bytes(32, "little")  # small order: decodes, refused
    order_two = (P - 1).to_bytes(32, "little")  # y = -1: the point of order 2
    order_four = bytes(32)  # y = 0: order 4; the all-zero "placeholder" key
    for public in (not_canonical_y, all_ones, x_zero_with_sign, not_on_curve, identity, order_two,
                   order_four):
        assert ed25519.verify(public, b"m", signature) is False
    assert ed25519._decode_point(not_on_curve) is None
    assert ed25519._decode_point(not_canonical_y) is None
    assert ed25519._decode_point(x_zero_with_sign) is None
    assert ed25519._decode_point(identity) == (0, 1)
    # R not canonical (y >= p): compared as an encoding, so never equal to R' (always canonical).
    key = Ed25519PrivateKey.generate()
    good = key.sign(b"m")
    assert not ed25519.verify(raw_public(key), b"m", (P + 3).to_bytes(32, "little") + good[32:])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300),
       index=st.integers(min_value=0, max_value=10**6))
def test_property_matches_cryptography(seed, message, index):
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public, signature = raw_public(key), key.sign(message)
    assert ed25519.verify(public, message, signature)
    # One flipped bit anywhere in key, signature or message: both libraries say no.
    material = public + signature + message
    bit = index % (len(material) * 8)
    changed = flip(material, bit)
    p2, s2, m2 = changed[:32], changed[32:96], changed[96:]
    ours = ed25519.verify(p2, m2, s2)
    try:
        Ed25519PublicKey.from_public_bytes(p2).verify(s2, m2)
        theirs = True
    except Exception:  # InvalidSignature, or a key OpenSSL cannot decode
        theirs = False
    assert ours is theirs is False


@settings(max_examples=100, deadline=None)
@given(public=st.binary(min_size=32, max_size=32), signature=st.binary(min_size=64, max_size=64),
       message=st.binary(max_size=64))
def test_property_garbage_never_raises(public, signature, message):
    assert ed25519.verify(public, message, signature) is False


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=600))
def test_sha512_matches_hashlib(data):
    assert sha512.digest(data) == hashlib.sha512(data).digest()


def test_sha512_block_boundaries():
    for n in (0, 1, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 1023):
        data = bytes(range(256)) * 4
        assert sha512.digest(data[:n]) == hashlib.sha512(data[:n]).digest(), n


# ---- the same module on the real MicroPython binary --------------------------------------------
DRIVER = r"""
import sys, json, time
sys.path.insert(0, sys.argv[1])
from ota import ed25519
import binascii
try:
    import hashlib
    print(json.dumps({"has_sha512": hasattr(hashlib, "sha512")}))
except ImportError:
    pass
with open(sys.argv[2]) as f:
    cases = json.load(f)
for name, public, message, signature in cases:
    t = time.ticks_us()
    ok = ed25519.verify(binascii.unhexlify(public), binascii.unhexlify(message), binascii.unhexlify(signature))
    print(json.dumps({"name": name, "ok": ok, "us": time.ticks_diff(time.ticks_us(), t)}))
print(json.dumps({"bad_types": [ed25519.verify(None, b"", b""), ed25519.verify(b"x" * 32, b"", b"y" * 63)]}))
"""


def _hex(data):
    return binascii.hexlify(data).decode()


@pytest.mark.skipif(not os.access(MICROPYTHON, os.X_OK), reason="no micropython binary")
def test_micropython_vectors_and_cryptography(tmp_path):
    cases, expected = [], {}

    def add(name, public, message, signature, ok):
        cases.append((name, _hex(public), _hex(message), _hex(signature)))
        expected[name] = ok

    for name, _, public, message, signature in VECTORS:
        add(name, u(public), u(message), u(signature), True)
    add("TEST 2 flipped message", u(VECTORS[1][2]), b"\x73", u(VECTORS[1][4]), False)
    add("TEST 3 flipped R", u(VECTORS[2][2]), u(VECTORS[2][3]), flip(u(VECTORS[2][4]), 3), False)
    add("TEST 1 S+L", u(VECTORS[0][2]), b"",
        with_s(u(VECTORS[0][4]), int.from_bytes(u(VECTORS[0][4])[32:], "little") + L), False)
    add("point not on curve", (2).to_bytes(32, "little"), b"", u(VECTORS[0][4]), False)
    add("y >= p", (P + 1).to_bytes(32, "little"), b"", u(VECTORS[0][4]), False)
    for i in range(3):
        key = Ed25519PrivateKey.generate()
        message = os.urandom(40 * i)
        add("cryptography %d" % i, raw_public(key), message, key.sign(message), True)
        add("cryptography %d wrong key" % i, raw_public(Ed25519PrivateKey.generate()), message,
            key.sign(message), False)
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    run = subprocess.run([MICROPYTHON, "-c", DRIVER, LIB, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    got = {line["name"]: line["ok"] for line in lines if "name" in line}
    assert got == expected
    assert lines[0] == {"has_sha512": False}  # why lib/ota/sha512.py exists
    assert lines[-1] == {"bad_types": [False, False]}
