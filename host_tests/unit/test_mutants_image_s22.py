"""ota.image, session 22 survivors (issue 15): the not_app_image detail names the image's first byte
as it is and the magic as the docs write it (0xE9). The message catalogue reads every hex number as
"<hex>", so it cannot tell `check_magic__mutmut_11` ("0xe9") or `_13` (byte 1 quoted instead of
byte 0) from the original: the detail is asserted whole here."""
import pytest

import fakes
from ota import image
from ota.errors import OtaError

HEAD = fakes.build_image("1.2.3", payload_size=5000)[:image.HEADER_BYTES]


def test_not_an_app_image_names_its_first_byte_and_the_magic():
    first = bytearray(HEAD)
    first[0] = 0xE8  # byte 1 (the segment count) is 0x02: another value
    assert first[1] != first[0]
    with pytest.raises(OtaError) as e:
        image.check_header(bytes(first), None)
    assert (e.value.reason, e.value.detail) == ("not_app_image", "first byte 0xe8, an app image starts with 0xE9")
