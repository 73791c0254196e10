"""ota.link.Link, what the session-21 run left: each OSError the link raises says what failed in
words that start its text and nothing around them (the agent's loop prints it as "agent: connection
lost: ..."; an OSError's text is not in the message catalogue). CPython, the fakes of
test_agent_objects.py."""
import types

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
import test_agent_objects
from test_agent_objects import Client, make_link
from test_mutants_link import Station

clock = test_agent_objects.clock  # its fixture, registered here


def test_a_packet_cut_short_is_named_so(clock):
    lk, _, _ = make_link()
    lk.connect()
    lk.client.fail = IndexError("index out of range")
    with pytest.raises(OSError) as e:
        lk.check()
    assert e.value.args == (104, "MQTT packet cut short: IndexError('index out of range')")


def test_a_refused_session_is_named_mqtt(clock):
    class Refused(Client):
        def connect(self):
            self.sock = types.SimpleNamespace(close=lambda: None)
            raise AssertionError("garbled CONNACK")

    lk, _, _ = make_link()
    lk.mqtt_class = Refused
    with pytest.raises(OSError) as e:
        lk.open()
    assert e.value.args == (111, "mqtt: AssertionError('garbled CONNACK')")


def test_no_wifi_is_named_so(clock):
    lk, _, _ = make_link()
    lk.network = types.SimpleNamespace(WLAN=lambda iface: Station(), STA_IF=0, STAT_IDLE=1000)
    with pytest.raises(OSError) as e:
        lk.wifi(limit_ms=0)
    assert e.value.args == (110, "wifi not connected")
