"""otactl's --chip-rev (image inspect, release) takes what the device's config takes for ota.chip_rev:
0..65535, the header's 16-bit field. Before, any int went through to ota.image: a negative revision
printed as garbage ("v-1.95") and one above 0xFFFF met an image's "no maximum" 0xFFFF, the only
inputs that told session 21's ota.image survivors (_revision__mutmut_4, check_revision__mutmut_28)
from the original (docs/MUTATION.md)."""
import pytest

from otactl import cli
from otactl.cmd_image import chip_rev


@pytest.mark.parametrize("command", [["image", "inspect", "f.bin"], ["release", "f.bin"]])
@pytest.mark.parametrize("value", ["-1", "65536", "4.0", "v0.4"])
def test_a_chip_revision_outside_16_bits_is_refused_before_any_file_is_read(command, value, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(command + ["--chip-rev", value])
    assert e.value.code == 2  # argparse's usage error
    assert "--chip-rev: invalid chip_rev value: '%s'" % value in capsys.readouterr().err


@pytest.mark.parametrize("value, expected", [("0", 0), ("4", 4), ("65535", 65535)])
def test_a_chip_revision_in_16_bits_is_taken(value, expected):
    assert chip_rev(value) == expected
