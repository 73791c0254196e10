# Ed25519 signature VERIFICATION (RFC 8032 section 5.1.7) in plain Python, for MicroPython and CPython.
#
#   ok = ed25519.verify(public_key, message, signature)   # 32, any, 64 bytes -> True / False
#
# Never raises for bad input: a wrong length, a public key that is not a curve point (or a
# non-canonical encoding of one), S >= L, or a signature that does not match all give False.
# No signing here: the device never holds a private key (otactl/signing.py signs with `cryptography`).
#
# The check is the cofactorless one of OpenSSL and ref10, which `cryptography` uses: compute
# R' = [S]B - [k]A with k = SHA-512(R || A || M) mod L, encode R' and compare the 32 bytes with R.
# RFC 8032 allows it ("sufficient, but not required"); comparing encodings also rejects a
# non-canonical R without decoding it. A public key of small order ([8]A = identity; e.g. all zeros,
# a placeholder left in a config) is refused, as libsodium does: with such a key the all-zero
# signature would verify for about one message in four.
#
# Speed (MicroPython ints are arbitrary precision: mpz on every port we run): extended twisted
# Edwards coordinates (RFC 8032 5.1.4), one joint 2-bit-window pass over both scalars (Straus/Shamir:
# 253 doublings and at most 127 additions), a 15-entry table built per call (about 60 big ints, a few
# KB; nothing precomputed at import), reduction mod p by folding (2^255 = 19 mod p) instead of `%`,
# and exponentiations (one inversion, one square root) as addition chains of such squarings.
# Doublings skip T when no addition follows. docs/SIGNING.md has the timings.
try:
    from hashlib import sha512 as _sha512

    def _hash(data):
        return _sha512(data).digest()

except ImportError:  # MicroPython: hashlib has no sha512 on any port we target
    from ota.sha512 import digest as _hash

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555  # -121665/121666
_D2 = 2 * _D % _P
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752  # 2^((p-1)/4)
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960


def _fold(r):
    # r mod p, loosely: two folds of 2^255 = 19 (mod p); see _double_scalar for the bounds.
    m = (1 << 255) - 1
    r = (r & m) + 19 * (r >> 255)
    return (r & m) + 19 * (r >> 255)


def _square_times(a, n):
    m = (1 << 255) - 1
    for _ in range(n):
        r = a * a
        r = (r & m) + 19 * (r >> 255)
        a = (r & m) + 19 * (r >> 255)
    return a


def _pow_2_250_1(z):
    # z^(2^250 - 1) and z^11, the common start of both exponentiations (ref10's addition chain: 250
    # squarings, 11 multiplications). Squarings with folds beat the built-in pow(z, e, p), which does
    # a long division at every step (docs/SIGNING.md).
    z2 = _fold(z * z)
    z9 = _fold(_square_times(z2, 2) * z)
    z11 = _fold(z9 * z2)
    t5 = _fold(_fold(z11 * z11) * z9)  # z^(2^5 - 1)
    t10 = _fold(_square_times(t5, 5) * t5)
    t20 = _fold(_square_times(t10, 10) * t10)
    t40 = _fold(_square_times(t20, 20) * t20)
    t50 = _fold(_square_times(t40, 10) * t10)
    t100 = _fold(_square_times(t50, 50) * t50)
    t200 = _fold(_square_times(t100, 100) * t100)
    return _fold(_square_times(t200, 50) * t50), z11


def _invert(z):
    # 1/z = z^(p - 2) = z^(2^255 - 21) (Fermat). Loosely reduced.
    t, z11 = _pow_2_250_1(z)
    return _fold(_square_times(t, 5) * z11)


def _decode_point(encoded):
    # RFC 8032 5.1.3. Returns (x, y) or None: y >= p, no square root, or x == 0 with the sign bit set.
    p = _P
    y = int.from_bytes(encoded, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= p:
        return None
    u = (y * y - 1) % p
    v = (_D * y * y + 1) % p
    v3 = v * v % p * v % p
    w = u * v3 % p * v3 % p * v % p
    t, _ = _pow_2_250_1(w)
    x = u * v3 % p * _fold(_square_times(t, 2) * w) % p  # u v^3 (u v^7)^((p-5)/8)
    vxx = v * x % p * x % p
    if vxx != u:
        if vxx != p - u:
            return None
        x = x * _SQRT_M1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return x, y


def _add(a, b):
    # Extended coordinates, a = -1 (RFC 8032 5.1.4): (X, Y, Z, T) + (X, Y, Z, T), for the table only.
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = _fold((y1 - x1) * (y2 - x2))
    bb = _fold((y1 + x1) * (y2 + x2))
    cc = _fold(_fold(t1 * _D2) * t2)
    dd = _fold(2 * z1 * z2)
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return _fold(e * f), _fold(g * h), _fold(f * g), _fold(e * h)


def _cached(point):
    # The form the main loop adds from: (Y+X, Y-X, 2Z, 2dT), so an addition costs 8 multiplications.
    p = _P
    x, y, z, t = point
    return (y + x) % p, (y - x) % p, 2 * z % p, t * _D2 % p


def _table(ax, ay):
    # entry[4*i + j] = [i]B + [j](-A) in cached form, i, j in 0..3; entry 0 (the identity) is None.
    p = _P
    b1 = (_BX, _BY, 1, _BX * _BY % p)
    a1 = (p - ax, ay, 1, (p - ax) * ay % p)  # -A: the loop adds [k](-A) to get [S]B - [k]A
    b2 = _add(b1, b1)
    a2 = _add(a1, a1)
    bs = (None, b1, b2, _add(b2, b1))
    As = (None, a1, a2, _add(a2, a1))
    table = [None] * 16
    for i in range(4):
        for j in range(4):
            if i and j:
                table[4 * i + j] = _cached(_add(bs[i], As[j]))
            elif i or j:
                table[4 * i + j] = _cached(bs[i] or As[j])
    return table


def _double_scalar(s_bytes, k_bytes, table):
    # [s]B + [k](-A), scalars as 32 little-endian bytes (both < 2^253: 127 two-bit digits).
    # Returns projective (X, Y, Z), loosely reduced (see below). Everything stays in locals: a global
    # lookup per operation would cost more than the bookkeeping.
    #
    # Reduction without `%`: 2^255 = 19 (mod p), so r = (r & M) + 19 * (r >> 255) keeps r's value mod
    # p and cuts it to about 266 bits; a second fold brings it to [-2^15, 2^255 + 2^15). Each product
    # below is of two such numbers, or of their sums (< 2^258), so < 2^516, and the bounds hold.
    # Why: MicroPython's `%` is a long division, quadratic in the number of digits; with the 16-bit
    # digits of a 32-bit port it costs about 5x the two linear folds (docs/SIGNING.md, measured).
    m = (1 << 255) - 1
    x, y, z = 0, 1, 1  # the identity
    for i in range(126, -1, -1):
        shift = (i & 3) << 1
        index = (s_bytes[i >> 2] >> shift & 3) << 2 | (k_bytes[i >> 2] >> shift & 3)
        for _ in (0, 1):
            # Doubling (RFC 8032 5.1.4), without T3 (only an addition needs it: e*h, computed there).
            r = x * x
            r = (r & m) + 19 * (r >> 255)
            aa = (r & m) + 19 * (r >> 255)
            r = y * y
            r = (r & m) + 19 * (r >> 255)
            bb = (r & m) + 19 * (r >> 255)
            r = z * z << 1
            r = (r & m) + 19 * (r >> 255)
            cc = (r & m) + 19 * (r >> 255)
            h = aa + bb
            r = x + y
            r = r * r
            r = (r & m) + 19 * (r >> 255)
            e = h - ((r & m) + 19 * (r >> 255))
            g = aa - bb
            f = cc + g
            r = e * f
            r = (r & m) + 19 * (r >> 255)
            x = (r & m) + 19 * (r >> 255)
            r = g * h
            r = (r & m) + 19 * (r >> 255)
            y = (r & m) + 19 * (r >> 255)
            r = f * g
            r = (r & m) + 19 * (r >> 255)
            z = (r & m) + 19 * (r >> 255)
        if index:
            # Addition of a cached table entry, with T1 = e*h of the last doubling; no T3 either.
            yp, ym, z2, t2d = table[index]
            r = e * h
            r = (r & m) + 19 * (r >> 255)
            r = ((r & m) + 19 * (r >> 255)) * t2d
            r = (r & m) + 19 * (r >> 255)
            cc = (r & m) + 19 * (r >> 255)
            r = (y - x) * ym
            r = (r & m) + 19 * (r >> 255)
            aa = (r & m) + 19 * (r >> 255)
            r = (y + x) * yp
            r = (r & m) + 19 * (r >> 255)
            bb = (r & m) + 19 * (r >> 255)
            r = z * z2
            r = (r & m) + 19 * (r >> 255)
            dd = (r & m) + 19 * (r >> 255)
            e = bb - aa
            f = dd - cc
            g = dd + cc
            h = bb + aa
            r = e * f
            r = (r & m) + 19 * (r >> 255)
            x = (r & m) + 19 * (r >> 255)
            r = g * h
            r = (r & m) + 19 * (r >> 255)
            y = (r & m) + 19 * (r >> 255)
            r = f * g
            r = (r & m) + 19 * (r >> 255)
            z = (r & m) + 19 * (r >> 255)
    return x, y, z


def verify(public_key, message, signature):
    if not isinstance(public_key, (bytes, bytearray)) or not isinstance(signature, (bytes, bytearray)):
        return False
    if not isinstance(message, (bytes, bytearray)):
        return False
    if len(public_key) != 32 or len(signature) != 64:
        return False
    point = _decode_point(public_key)
    if point is None:
        return False
    a = (point[0], point[1], 1, point[0] * point[1] % _P)
    a = _add(a, a)
    a = _add(a, a)
    if _add(a, a)[0] % _P == 0:  # [8]A = (0, Y): the identity, A has small order
        return False
    s_bytes = bytes(signature[32:])
    if int.from_bytes(s_bytes, "little") >= _L:  # non-canonical S: malleable, RFC 8032 says reject
        return False
    r_bytes = bytes(signature[:32])
    k = int.from_bytes(_hash(r_bytes + bytes(public_key) + bytes(message)), "little") % _L
    x, y, z = _double_scalar(s_bytes, k.to_bytes(32, "little"), _table(point[0], point[1]))
    p = _P
    inverse = _invert(z)
    x = x * inverse % p
    y = y * inverse % p
    return (y | (x & 1) << 255) == int.from_bytes(r_bytes, "little")
