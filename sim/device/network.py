# Simulated `network` (ESP32 port, ports/esp32/network_wlan.c): the station interface as the chip has
# it (docs/CHIP.md):
# - WLAN(STA_IF) is one object (the port returns its static wlan_sta_obj), whatever the caller does;
# - connect() only starts the association: isconnected() turns true when the IP is got, sim.json
#   "wifi_connect_ms" later (default 300; seconds on a real network);
# - after a drop the driver re-associates by itself (wifi_sta_connect_requested) as soon as the AP is
#   back, again taking wifi_connect_ms; status() is STAT_CONNECTING meanwhile (STAT_NO_AP_FOUND while
#   the AP is out of range), and connect() while the driver is at it raises OSError('Wifi Internal
#   Error') (ESP_ERR_WIFI_CONN, network_common.c; micropython/micropython#17661); disconnect() stops it.
# sim.json "wifi": false keeps the AP away; the file DEVDIR/wifi_down (created/removed by a test) takes
# it away while the device runs. Real sockets go through the host's network.
import os
import time

import simdev

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204


def _ap_in_range():
    if not simdev.config.get("wifi", True):
        return False
    try:
        os.stat(simdev.path("wifi_down"))
        return False
    except OSError:
        return True


class _WLAN:
    def __init__(self, interface_id):
        self._if = interface_id
        self._active = False
        self._ssid = None     # set by connect(): the driver keeps (re)associating until disconnect()
        self._since = None    # ticks_ms when the current association started (None: AP out of range)

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)
        simdev.radio_on = self._active  # one interface, as our devices use
        if not self._active:
            self._ssid = self._since = None

    def _associating(self):
        # -> True while an association runs; starts one when the AP is (back) in range.
        if not self._active or self._ssid is None:
            return False
        if not _ap_in_range():
            self._since = None
            return True  # the driver retries until the AP answers
        now = time.ticks_ms()
        if self._since is None:
            self._since = now
        return time.ticks_diff(now, self._since) < simdev.config.get("wifi_connect_ms", 300)

    def connect(self, ssid=None, key=None, bssid=None):
        # Raises OSError like the port: not active; an association already running.
        if not self._active:
            raise OSError("Wifi Not Started")
        if self._associating():
            raise OSError("Wifi Internal Error")
        if self._ssid is not None and self.isconnected():
            return
        self._ssid = ssid
        self._since = time.ticks_ms() if _ap_in_range() else None

    def disconnect(self):
        self._ssid = self._since = None

    def isconnected(self):
        return self._active and self._ssid is not None and not self._associating()

    def status(self, param=None):
        if param == "rssi":
            # sim.json "rssi": a number, or a list the readings walk through (the last one stays), so
            # the telemetry's lowest RSSI has something to find.
            rssi = simdev.config.get("rssi", -55)
            if isinstance(rssi, list):
                self._rssi_reads = getattr(self, "_rssi_reads", 0) + 1
                rssi = rssi[min(self._rssi_reads, len(rssi)) - 1]
            return rssi
        if not self._active or self._ssid is None:
            return STAT_IDLE
        if not self._associating():
            return STAT_GOT_IP
        return STAT_CONNECTING if _ap_in_range() else STAT_NO_AP_FOUND

    def ifconfig(self, config=None):
        return ("192.168.4.2", "255.255.255.0", "192.168.4.1", "192.168.4.1")

    def config(self, param=None, **kwargs):
        if param == "mac":
            import machine
            return machine.unique_id()
        if param in ("ssid", "essid"):
            return self._ssid or ""
        if param in ("hostname", "dhcp_hostname"):
            return simdev.config.get("hostname", "esp32c3")
        return None


_interfaces = {}


def WLAN(interface_id=STA_IF):
    # One object per interface, as the port's static wlan_sta_obj / wlan_ap_obj.
    if interface_id not in _interfaces:
        _interfaces[interface_id] = _WLAN(interface_id)
    return _interfaces[interface_id]
