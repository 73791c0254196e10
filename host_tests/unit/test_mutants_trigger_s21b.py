"""ota.trigger, a survivor session 21 listed as equivalent (`_check_url`'s `sep > 1` for `sep > 0`):
a one-letter scheme is refused either way, but the detail names the scheme the original found, not
the URL's first 16 characters. CPython."""
import json

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import trigger
from ota.errors import OtaError


def test_a_one_letter_scheme_is_named_in_the_refusal():
    with pytest.raises(OtaError) as e:
        trigger.parse(json.dumps({"type": "ota_trigger", "url": "h://fw.example/a.bin"}).encode())
    assert (e.value.reason, e.value.detail) == ("bad_url", "scheme 'h' not supported")
