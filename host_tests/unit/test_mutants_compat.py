"""ota.compat's decision table one case at a time, and ota.slots' start-up reading (pinned after
`make mutate`; test_compat compares whole images with otactl's inspector, which is slow and leaves
single rules unpinned). CPython, fakes.py's NOR partitions."""
import pytest

from fakes import Slot, FakeEsp32, make_device
from devkit import images
from ota import compat
from ota.errors import OtaError
from ota.slots import Slots


def reason(call, *args, **kw):
    with pytest.raises(OtaError) as e:
        call(*args, **kw)
    return e.value.reason


# ---- the product --------------------------------------------------------------------------------

def test_the_same_product_passes_another_does_not():
    assert compat.check_project("switch", "switch") is None
    assert reason(compat.check_project, "lamp", "switch") == "wrong_product"
    assert reason(compat.check_project, "", "switch") == "wrong_product"  # stock MicroPython


def test_the_triggers_project_overrides_the_running_one():
    assert compat.check_project("lamp", "switch", "lamp") is None
    assert reason(compat.check_project, "switch", "switch", "lamp") == "wrong_product"
    assert compat.check_project("", "switch", "*") is None  # "*": any image, even a stock one
    assert compat.check_project("lamp", None, "*") is None


def test_an_unreadable_running_descriptor_needs_the_trigger_to_name_the_image():
    assert reason(compat.check_project, "switch", None) == "wrong_product"
    assert reason(compat.check_project, "", None) == "wrong_product"
    assert compat.check_project("switch", None, "switch") is None


# ---- the version ----------------------------------------------------------------------------------

@pytest.mark.parametrize("new, running, version, allow, want", [
    ("1.3.0", "1.2.0", None, False, ("1.3.0", False)),  # an update
    ("1.2.0", "1.2.0", None, False, ("1.2.0", True)),  # the running version
    ("1.2", "1.2.0", None, False, ("1.2", True)),  # the same version spelt otherwise
    ("1.1.0", "1.2.0", None, True, ("1.1.0", False)),  # older, allowed
    ("", "1.2.0", "1.3.0", False, ("1.3.0", False)),  # a stock build: the trigger's word
    ("", "1.2.0", None, False, ("", False)),  # nothing known: goes ahead
    ("", "1.2.0", "", False, ("", False)),
    ("1.3.0", None, None, False, ("1.3.0", False)),  # running version unknown
    ("1.3.0", "", None, False, ("1.3.0", False)),
    ("junk version", None, None, True, ("junk version", False)),  # cannot be ordered, but allowed
    ("junk version", "junk version", None, True, ("junk version", True)),  # equal strings: same
    ("1.3.0", "esp-idf: v4.4.7 38eeba2", None, True, ("1.3.0", False)),  # running unorderable, allowed
    ("1.3.0", "1.2.0", "1.3.0", False, ("1.3.0", False)),  # trigger and image agree
])
def test_check_version_answers(new, running, version, allow, want):
    assert compat.check_version(new, running, version, allow) == want


@pytest.mark.parametrize("new, running, version, allow, code", [
    ("1.3.0", "1.2.0", "1.4.0", False, "version_mismatch"),
    ("1.3.0", "1.2.0", "1.4.0", True, "version_mismatch"),  # allow_downgrade allows no lie
    ("1.1.0", "1.2.0", None, False, "downgrade"),
    ("1.2.0-rc1", "1.2.0", None, False, "downgrade"),
    ("junk version", None, None, False, "bad_version"),  # never "newer", even with nothing running
    ("junk version", "1.2.0", None, False, "bad_version"),
    ("", "1.2.0", "junk", False, "bad_version"),
    ("1.3.0", "esp-idf: v4.4.7 38eeba2", None, False, "bad_version"),
])
def test_check_version_refusals(new, running, version, allow, code):
    assert reason(compat.check_version, new, running, version, allow) == code


def test_check_takes_both_from_the_descriptor():
    info = {"project_name": "switch", "version": "1.3.0"}
    assert compat.check(info, "switch", "1.2.0") == ("1.3.0", False)
    assert compat.check(info, "switch", "1.3.0") == ("1.3.0", True)
    assert reason(compat.check, info, "lamp", "1.2.0") == "wrong_product"
    assert compat.check(info, "lamp", "1.2.0", project="switch") == ("1.3.0", False)
    assert reason(compat.check, info, "switch", "1.4.0") == "downgrade"
    assert compat.check(info, "switch", "1.4.0", allow_downgrade=True) == ("1.3.0", False)
    assert reason(compat.check, info, "switch", "1.2.0", version="1.3.1") == "version_mismatch"
    assert compat.check(info, "switch", "1.2.0", version="1.3.0") == ("1.3.0", False)


# ---- ota.slots --------------------------------------------------------------------------------------

def _device(running_image, running="ota_0"):
    esp = make_device(slot_size=0x40000, running=running)
    data = esp.slots[running].data
    data[:len(running_image)] = running_image
    return esp


def test_slots_reads_the_running_descriptor():
    esp = _device(images.build_image("1.4.2", project_name="switch"))
    slots = Slots(esp)
    assert slots.running == "ota_0" and slots.other.info()[4] == "ota_1"
    assert (slots.version, slots.project) == ("1.4.2", "switch")
    esp = _device(images.build_image("2.0.0", project_name="lamp"), running="ota_1")
    slots = Slots(esp)
    assert slots.running == "ota_1" and slots.other.info()[4] == "ota_0"
    assert (slots.version, slots.project) == ("2.0.0", "lamp")


def test_slots_without_a_descriptor_runs_all_the_same(capsys):
    esp = _device(images.bootloader_image())  # not an app image
    slots = Slots(esp)
    assert slots.running == "ota_0" and slots.other.info()[4] == "ota_1"
    assert slots.version is None and slots.project is None
    assert "running version unknown" in capsys.readouterr().out


def test_slots_on_a_factory_only_table():
    factory = Slot("factory", 0x40000, 0x10000, 0x00)
    factory.data[:] = b"\xff" * 0x40000
    app = images.build_image("1.0.0", project_name="switch")
    factory.data[:len(app)] = app
    slots = Slots(FakeEsp32([factory], running="factory"))
    assert slots.running == "factory" and slots.other is None
    assert (slots.version, slots.project) == ("1.0.0", "switch")


def test_a_caller_that_names_no_policy_gets_the_safe_one():
    # allow_downgrade defaults to False in check() and check_version(): a caller that forgets the
    # policy (every one passes it today) refuses downgrades and unorderable versions rather than
    # installing them (mutants check_version _1, check _1 made the default True)
    info = {"project_name": "switch", "version": "1.0.0"}
    assert reason(compat.check, info, "switch", "2.0.0") == "downgrade"
    assert reason(compat.check_version, "1.0.0", "2.0.0") == "downgrade"
    assert reason(compat.check_version, "nightly", None) == "bad_version"
    assert compat.check(info, "switch", "0.9.0") == ("1.0.0", False)
