"""otactl.rollout.Options.from_dict, what the session-21 run left: a start record with several
unknown options names each of them, comma-separated (the words reach the operator as bad_log's
detail; a ValueError, which the message catalogue does not record). CPython."""
import pytest

from otactl import rollout


def test_every_unknown_option_is_named_in_order():
    with pytest.raises(ValueError) as e:
        rollout.Options.from_dict({"stages": [1.0], "zeta": 1, "alpha": 2})
    assert str(e.value) == "unknown option alpha, zeta"
