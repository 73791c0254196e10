# The artifact fields of a trigger (docs/COMPRESSED.md), parsed here so that trigger.py stays small
# for the plain trigger (the module is imported only when a trigger has one of these fields):
#   encoding           "deflate" (url is an OTAZ container of the image) or "delta" (of a patch)
#   file_sha256, file_size    the container's own hash and length (sha256/size stay the image's)
#   base_sha256        delta: the running image the patch applies to (required)
#   fallback           delta: the URL to use when the running image is not the base
#   fallback_encoding  "deflate" when the fallback is a compressed container (absent: a plain image)
# Reasons: bad_encoding, bad_sha256_field, bad_size, bad_url.
from ota import trigger
from ota.errors import OtaError

ENCODINGS = ("deflate", "delta")


# The artifact fields (docs/COMPRESSED.md). Absent from `out` unless the trigger has "encoding": a
# trigger without them is parsed, signed and run exactly as before they existed.
def parse(msg, out):
    encoding = msg.get("encoding")
    if encoding is None:
        for name in trigger.ENCODING_FIELDS:
            if name in msg:
                raise OtaError("bad_encoding", "%s without encoding" % name)
        return
    if encoding not in ENCODINGS:
        raise OtaError("bad_encoding", "encoding must be one of %s" % ", ".join(ENCODINGS))
    out["encoding"] = encoding
    value = msg.get("file_sha256")
    out["file_sha256"] = None if value is None else trigger._check_sha256(value)
    size = msg.get("file_size")
    if size is not None and not (trigger._is_int(size) and size > 0):
        raise OtaError("bad_size", "file_size must be a positive integer")
    out["file_size"] = size
    value = msg.get("base_sha256")
    if encoding == "delta" and value is None:
        raise OtaError("bad_encoding", "a delta needs base_sha256")
    out["base_sha256"] = None if value is None else trigger._check_sha256(value)
    fallback = msg.get("fallback")
    if fallback is not None:
        trigger._check_url(fallback)
    out["fallback"] = fallback
    fallback_encoding = msg.get("fallback_encoding")
    if fallback_encoding is not None and (fallback_encoding != "deflate" or fallback is None):
        raise OtaError("bad_encoding", "fallback_encoding must be deflate, with a fallback")
    out["fallback_encoding"] = fallback_encoding


# The trigger's artifact fields for update.run(artifact=), or None for a plain image.
def of(job):
    if not job.get("encoding"):
        return None
    return {name: job.get(name) for name in trigger.ENCODING_FIELDS}
