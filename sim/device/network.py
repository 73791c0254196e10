# Simulated `network` (ESP32 port): one station interface that "connects" at once. sim.json
# "wifi": false keeps it down; the file DEVDIR/wifi_down (created/removed by a test) drops the link
# while the device runs. Real sockets go through the host's network.
import os

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


def _wifi_up():
    if not simdev.config.get("wifi", True):
        return False
    try:
        os.stat(simdev.path("wifi_down"))
        return False
    except OSError:
        return True


class WLAN:
    def __init__(self, interface_id=STA_IF):
        self._if = interface_id
        self._active = False
        self._ssid = None

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)

    def connect(self, ssid=None, key=None, bssid=None):
        # Raises OSError like the port when the interface is not active.
        if not self._active:
            raise OSError("Wifi Not Started")
        self._ssid = ssid

    def disconnect(self):
        self._ssid = None

    def isconnected(self):
        return self._active and self._ssid is not None and _wifi_up()

    def status(self, param=None):
        if param == "rssi":
            return -55
        if not self._active or self._ssid is None:
            return STAT_IDLE
        return STAT_GOT_IP if _wifi_up() else STAT_NO_AP_FOUND

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
