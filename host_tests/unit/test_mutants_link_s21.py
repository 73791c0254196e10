"""ota.link.Link, what the session-21 mutation run over ota.link left (test_mutants_link.py has the
rest): the station interface asked for, what the console says about the clock, and what each OSError
the link raises says about the failure (the agent's loop prints it: "agent: connection lost: ...").
CPython, the fakes of test_agent_objects.py."""
import sys
import types

import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
import test_agent_objects
from test_agent_objects import Client, make_link
from test_mutants_link import Station
from ota import link, state

clock = test_agent_objects.clock  # its fixture, registered here


def test_wifi_asks_for_the_station_interface(clock):
    # MicroPython's esp32 network.WLAN(x) takes x as an int (ports/esp32/network_wlan.c:
    # mp_obj_get_int(args[0])): any other interface, or None (a TypeError no loop catches), is not
    # the station the config's ssid is for.
    asked = []
    lk, _, _ = make_link()
    station = Station(up=True)
    lk.network = types.SimpleNamespace(WLAN=lambda iface: asked.append(iface) or station, STA_IF=0,
                                       AP_IF=1, STAT_IDLE=1000)
    lk.wifi()
    assert asked == [0]


@pytest.mark.parametrize("now, says", [(1800000000, False), (None, True), (link._NTP_ZERO, True)])
def test_the_console_says_so_only_when_ntp_gave_no_usable_time(clock, monkeypatch, capsys, now, says):
    monkeypatch.setitem(sys.modules, "ntptime", types.SimpleNamespace(settime=lambda: None))
    monkeypatch.setattr(state, "unix_time", lambda: now)
    lk, _, _ = make_link()
    lk.set_clock()
    out = capsys.readouterr().out
    assert ("agent: ntptime gave no usable time: %s" % now in out) is says, out
    assert lk.clock_set is not says


def test_each_oserror_the_link_raises_names_what_failed(clock):
    # The only words an operator gets at the console when the device keeps reconnecting, whole
    # (an OSError's text is not in the message catalogue).
    lk, _, _ = make_link()
    lk.connect()
    lk.client.fail = IndexError("index out of range")
    with pytest.raises(OSError) as e:
        lk.check()
    assert e.value.args == (104, "MQTT packet cut short: IndexError('index out of range')")

    class Refused(Client):
        def connect(self):
            self.sock = types.SimpleNamespace(close=lambda: None)
            raise AssertionError("garbled CONNACK")

    lk, _, _ = make_link()
    lk.mqtt_class = Refused
    with pytest.raises(OSError) as e:
        lk.open()
    assert e.value.args == (111, "mqtt: AssertionError('garbled CONNACK')")

    lk, _, _ = make_link()
    lk.network = types.SimpleNamespace(WLAN=lambda iface: Station(), STA_IF=0, STAT_IDLE=1000)
    with pytest.raises(OSError) as e:
        lk.wifi(limit_ms=0)
    assert e.value.args == (110, "wifi not connected")
