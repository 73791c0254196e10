# The message catalogue (host_tests/message_catalogue.py): what it records, what it leaves out, and
# that a message missing from host_tests/messages.txt is reported.
import os
import sys

import pytest

import message_catalogue
from message_catalogue import Watch, normalise


def test_normalise_keeps_words_and_hides_what_varies_between_runs():
    assert normalise("slot holds 1572864 bytes, image 1572865") == "slot holds # bytes, image #"
    assert normalise("cannot read /tmp/pytest-of-me/pytest-3/t0/x.json: gone") == "cannot read <tmp>: gone"
    assert normalise("key " + "ab12" * 8 + " refused, first byte 0xE9") == "key <hex> refused, first byte <hex>"
    assert normalise("line\r\nnext\xff") == "line\\r\\nnext\\xff"  # one line in the file, whatever it holds
    # Under mutmut a function runs as x_f__mutmut_orig (a method as xǁCǁm__mutmut_3): a Python error
    # quoted in a message names it so, and must read as it does outside mutmut.
    assert normalise("(C.x\u01c1C\u01c1__init____mutmut_7() got an unexpected keyword argument 'k')") == \
        "(C.__init__() got an unexpected keyword argument 'k')"
    assert normalise("x_split__mutmut_orig() takes 1 argument") == "split() takes # argument"
    # A clean clone sits elsewhere than the checkout that wrote the catalogue.
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert normalise("esptool is not installed for %s" % sys.executable) == "esptool is not installed for <python>"
    assert normalise("cannot read %s/partitions.csv" % here) == "cannot read <repo>/partitions.csv"


def _watched(action, catalogue_lines, tmp_path, monkeypatch):
    catalogue = tmp_path / "messages.txt"
    catalogue.write_text("".join(line + "\n" for line in catalogue_lines))
    monkeypatch.setattr(message_catalogue, "PATH", str(catalogue))
    monkeypatch.delenv(message_catalogue.RECORD_ENV, raising=False)
    watch = Watch()
    watch.start()
    try:
        action()
    finally:
        missing = watch.finish()
    return watch.seen, missing


def test_an_error_made_by_the_device_package_is_recorded_and_checked(tmp_path, monkeypatch):
    from ota import url
    from ota.errors import OtaError

    def refuse():
        with pytest.raises(OtaError):
            url.split("ftp://host/fw.bin")

    seen, missing = _watched(refuse, [], tmp_path, monkeypatch)
    assert len(seen) == 1 and next(iter(seen)).startswith("bad_url: ")
    assert missing == sorted(seen)  # an empty catalogue knows none of them
    seen, missing = _watched(refuse, sorted(seen), tmp_path, monkeypatch)
    assert missing == []


def test_a_print_of_the_device_package_is_recorded(tmp_path, monkeypatch, capsys):
    from ota import slots, version

    class Running:
        RUNNING = 0

        def __init__(self, which):
            pass

        def info(self):
            return (0, 0, 0x10000, 0x1F0000, "ota_0", False)

        def get_next_update(self):
            raise OSError(2, "no OTA slots")

    def unreadable(partition):
        raise OSError(5, "flash")

    monkeypatch.setattr(version, "read_descriptor", unreadable)
    seen, missing = _watched(lambda: slots.Slots(type("esp32", (), {"Partition": Running})), [], tmp_path,
                             monkeypatch)
    assert "agent: running version unknown: [Errno 5] flash" in capsys.readouterr().out
    assert seen == {"print: agent: running version unknown: [Errno #] flash"} and missing == sorted(seen)


def test_errors_made_by_a_test_or_internal_errors_are_not_ours(tmp_path, monkeypatch):
    from ota.errors import OtaError, unexpected

    def made_here():
        OtaError("bad_url", "made by the test itself")
        unexpected(ValueError("CPython's words"))  # internal_error: its detail is Python's wording

    seen, missing = _watched(made_here, [], tmp_path, monkeypatch)
    assert seen == set() and missing == []
