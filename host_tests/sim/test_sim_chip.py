"""The simulator is no kinder than the chip (docs/CHIP.md): each test runs the real MicroPython binary on
the simulated ESP32-C3 with a small fs/main.py that does what the chip punishes, and checks the chip's
answer. Each of them failed on the simulator before it modelled that fact."""
import os

import pytest

from test_sim_runner import app
from sim.runner import Device

from paths import MICROPYTHON
pytestmark = pytest.mark.skipif(not os.path.exists(MICROPYTHON), reason="no micropython binary")


def make(tmp_path, main, max_boots=4, **settings):
    device = Device(tmp_path / "dev", max_boots=max_boots)
    device.create(app("1.0.0"), fs_files={"main.py": main}, **settings)
    return device


# --- writing the running slot: a panic before flash is touched ------------------------------------
RUNNING_WRITE = """
import esp32, machine, os
print('cause', machine.reset_cause())
try:
    os.stat('tried')
except OSError:
    open('tried', 'w').close()
    running = esp32.Partition(esp32.Partition.RUNNING)
    try:
        running.%s
    except OSError as e:
        print('refused', e)
    print('still running')
"""


@pytest.mark.parametrize("call", ["writeblocks(1, bytearray(4096))", "writeblocks(1, b'\\\\x00' * 16, 0)",
                                  "ioctl(6, 1)"])
def test_touching_the_running_app_panics_before_flash_is_touched(tmp_path, call):
    device = make(tmp_path, RUNNING_WRITE % call)
    running = device.partition("ota_0")
    before = device.read_flash(running.offset, 3 * 4096)
    assert device.run(timeout=30) == "exit"
    console = device.console()
    assert "still running" not in console and "refused" not in console
    assert "abort() was called" in console
    boots = device.boots()
    assert [b["exit"] for b in boots] == ["panic", "exit"]
    assert boots[1]["reset_cause"] == "HARD_RESET" and boots[1]["slot"] == "ota_0"
    assert device.read_flash(running.offset, 3 * 4096) == before
    assert device.counters()["boots"][0]["erases_by_partition"].get("ota_0", 0) == 0


# MicroPython, for the scripts below: connect() -> a verifying TLS client context (the test CA in
# ca.der) and a socket connected to the test server (PORT, replaced before the run).
TLS_CLIENT = """
import socket, ssl
CA = open('ca.der', 'rb').read()

def connect():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=CA)
    sock = socket.socket()
    sock.connect(socket.getaddrinfo('127.0.0.1', PORT)[0][-1])
    return context, sock
"""

# --- the clock: 2000-01-01 after power-on, no verified TLS before ntptime, NTP that fails ------------
CLOCK = TLS_CLIENT + """
import errno, time, ntptime
print('epoch', time.gmtime(0)[0], 'year', time.gmtime()[0], 'early', time.time() < 3600)

def handshake():
    context, sock = connect()
    try:
        context.wrap_socket(sock, server_hostname='localhost').close()
        print('handshake ok')
    except ValueError as e:
        sock.close()
        print('verify failed:', str(e).strip())

handshake()
for attempt in range(3):
    try:
        ntptime.settime()
        print('ntp set at attempt', attempt)
        break
    except OSError as e:
        print('ntp failed, timeout:', e.errno == errno.ETIMEDOUT)
handshake()
print('year now', time.gmtime()[0] >= 2026)
"""


@pytest.fixture
def https_server(tls_site):
    from devkit.devserver import DevServer

    _, pki, www = tls_site("sim-chip-https")
    with DevServer(www, pki.server_cert, pki.server_key) as server:
        server.pki = pki
        yield server


@pytest.mark.parametrize("ntp_failures", [0, 2])
def test_clock_starts_in_2000_and_tls_verifies_only_after_ntp(tmp_path, https_server, ntp_failures):
    ca = open(https_server.pki.ca_der, "rb").read()
    device = Device(tmp_path / "dev", max_boots=1)
    device.create(app("1.0.0"), fs_files={"main.py": CLOCK.replace("PORT", str(https_server.port)),
                                          "ca.der": ca}, ntp_failures=ntp_failures)
    assert device.run(timeout=30) == "exit", device.console()
    lines = [line.strip() for line in device.console().splitlines() if not line.startswith(("I (", "sim-ssl"))]
    assert lines == (["epoch 2000 year 2000 early True",
                      "verify failed: The certificate validity starts in the future"]
                     + ["ntp failed, timeout: True"] * ntp_failures
                     + ["ntp set at attempt %d" % ntp_failures, "handshake ok", "year now True"])


# --- Wi-Fi: one station object, an IP only later, a driver that re-associates by itself -------------
WIFI = """
import network, os, time
sta = network.WLAN(network.STA_IF)
print('singleton', sta is network.WLAN(network.STA_IF))
sta.active(True)
sta.connect('lab', 'password1')
print('at once', sta.isconnected(), sta.status() == network.STAT_CONNECTING)
try:
    network.WLAN(network.STA_IF).connect('lab', 'password1')
except OSError as e:
    print('second connect:', e)
start = time.ticks_ms()
while not sta.isconnected():
    time.sleep(0.02)
print('connected after wait', time.ticks_diff(time.ticks_ms(), start) > 0)
open('../wifi_down', 'w').close()
print('AP gone', sta.isconnected(), sta.status() == network.STAT_NO_AP_FOUND)
os.remove('../wifi_down')
try:
    sta.connect('lab', 'password1')
except OSError as e:
    print('connect while the driver re-associates:', e)
while not sta.isconnected():
    time.sleep(0.02)
print('back by itself', sta.status() == network.STAT_GOT_IP)
sta.disconnect()
print('disconnected', sta.status() == network.STAT_IDLE)
sta.connect('lab', 'password1')
print('connect from idle works')
"""


def test_wlan_is_one_object_that_connects_late_and_reassociates_by_itself(tmp_path):
    device = make(tmp_path, WIFI, max_boots=1, wifi_connect_ms=400)
    assert device.run(timeout=30) == "exit", device.console()
    lines = [line.strip() for line in device.console().splitlines() if not line.startswith("I (")]
    assert lines == ["singleton True", "at once False True", "second connect: Wifi Internal Error",
                     "connected after wait True", "AP gone False True",
                     "connect while the driver re-associates: Wifi Internal Error", "back by itself True",
                     "disconnected True", "connect from idle works"]


# --- TLS memory: a session takes about 42 KB of the IDF heap, its record buffer one 16.7 KB block ---
TLS_MEMORY = TLS_CLIENT + """
import esp32, ntptime
ntptime.settime()

def heap():
    region = esp32.idf_heap_info(esp32.HEAP_DATA)[0]
    return region[1], region[2]

def session():
    context, sock = connect()
    try:
        return context.wrap_socket(sock, server_hostname='localhost')
    except OSError as e:
        sock.close()
        print('handshake failed: OSError', e.args[0])

print('idle', heap())
first = session()
print('one open', heap())
second = session()
if first:
    first.close()
print('closed', heap())
"""


@pytest.mark.parametrize("idf_heap, expect", [
    # one session fits: the second one's handshake runs out half-way: OSError(16), not ENOMEM
    ([[245760, 90000, 60000, 60000]], ["idle (90000, 60000)", "one open (46992, 16992)",
                                       "handshake failed: OSError 16", "closed (90000, 60000)"]),
    # no 16.7 KB block for the input record buffer: mbedtls_ssl_setup fails (after a collect): ENOMEM
    ([[245760, 30000, 16000, 16000]], ["idle (30000, 16000)", "handshake failed: OSError 12",
                                       "one open (30000, 16000)", "handshake failed: OSError 12",
                                       "closed (30000, 16000)"]),
])
def test_tls_sessions_take_the_idf_heap_that_idf_heap_info_reports(tmp_path, https_server, idf_heap, expect):
    ca = open(https_server.pki.ca_der, "rb").read()
    device = Device(tmp_path / "dev", max_boots=1)
    device.create(app("1.0.0"), fs_files={"main.py": TLS_MEMORY.replace("PORT", str(https_server.port)),
                                          "ca.der": ca}, tls_accounting=True, idf_heap=idf_heap)
    assert device.run(timeout=30) == "exit", device.console()
    lines = [line.strip() for line in device.console().splitlines() if not line.startswith(("I (", "sim-ssl"))]
    assert lines == expect


SEEDED = """
import network, ssl
ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
print("RADIO ON")
network.WLAN(network.STA_IF).active(True)
ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
print("RADIO OFF")
network.WLAN(network.STA_IF).active(False)
ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
"""


def test_a_tls_context_made_without_the_radio_is_said_on_the_console(tmp_path):
    # The C3's RNG is only pseudo-random until Wi-Fi is on, and a context seeds its DRBG once, when
    # made (docs/CHIP.md §12): the simulated ssl says so, for tests to hold the agent to it.
    device = make(tmp_path, SEEDED, max_boots=1)
    assert device.run(timeout=30) == "exit", device.console()
    out = device.console()
    said = [line for line in out.splitlines() if line.startswith(("sim-ssl: context", "RADIO"))]
    assert said == ["sim-ssl: context made before the radio was on", "RADIO ON", "RADIO OFF",
                    "sim-ssl: context made before the radio was on"], out
