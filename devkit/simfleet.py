"""Simulated fleet devices running the real firmware: what the end-to-end tests, `make demo` and the
benchmarks share. A device is the repository's boot.py/main.py on its filesystem, a config.json that
points at our broker, the test CA, and a factory image whose frozen code is this checkout's lib/."""
import contextlib
import json
import os

from devkit import images
from sim.runner import Device

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The GC heap of a simulated fleet device, measured (host_tests/sim/test_sim_heap.py keeps it honest):
# before main.py the simulator's own esp32/machine/network/socket modules hold about 24 KB of
# objects (C code on the board). Code is not in this number: the device package is frozen, and the
# simulator runs its bytecode, and its own modules' bytecode, in place from ROMFS images in a room
# added to -X heapsize (sim/device/simboot.py, sim.runner.ROM_ROOM), as the board runs them from
# flash; importing the agent with the whole data path still makes about 75 KB of function, class
# and module objects and tables. 104wK (208 KB on a 64-bit host) leaves about 110 KB of 64-bit
# objects, roughly 55 KB of 32-bit ones, for what the device code allocates at run time: about the
# C3's starting GC heap, which the real chip can still grow from the IDF heap (docs/CHIP.md 5). It
# was 136wK while the simulator loaded that bytecode into the heap (about 67 KB of it; issue 13):
# the same free heap after the imports either way.
# The bare data path without the agent is measured by `make bench`.
FLEET_HEAP = "104wK"

FAILING_SELFTEST = b'''# A broken release: its self-test fails, so the health gate never confirms it.
def run(cfg):
    return False, "simulated broken release"
'''


def device_files(failing_selftest=False, append=None):
    """(name, source) of the frozen device code; `append` {name: bytes} adds code to modules (a
    release that differs from this checkout's, e.g. a stricter config validator)."""
    files = images.device_files()
    if failing_selftest:
        files = [(name, FAILING_SELFTEST if name == "ota/selftest.py" else data) for name, data in files]
    if append:
        assert set(append) <= {name for name, _ in files}, append
        files = [(name, data + append.get(name, b"")) for name, data in files]
    return files


def firmware(version, size=None, failing_selftest=False, append=None, **image_options):
    """An ESP32-C3 app image of `version` whose frozen code is this checkout's device code."""
    return images.build_image(version, files=device_files(failing_selftest, append), size=size,
                                      **image_options)


def releases(size, note):
    """Real-sized images whose filler is compiled MicroPython (devkit/firmware_bytes.py), for compressed
    and delta updates: -> (that code, 1.0.0, 1.0.1 = 1.0.0 with one frozen module changed, `note` appended
    to ota/selftest.py, 1.1.0 = the firmware bytes recompiled too)."""
    from devkit import firmware_bytes

    code = firmware_bytes.code_bytes()
    return (code, firmware("1.0.0", size=size, fill=code),
            firmware("1.0.1", size=size, fill=code, append={"ota/selftest.py": note}),
            firmware("1.1.0", size=size, fill=firmware_bytes.recompiled(code)))


def device_config(broker_host, broker_port, ota=None, mqtt=None, device_id=None):
    cfg = {"wifi": {"ssid": "lab", "password": "password1"},
           "mqtt": dict({"host": broker_host, "port": broker_port, "keepalive_s": 30}, **(mqtt or {})),
           "ota": dict({"ca_path": "ca.der"}, **(ota or {}))}
    if device_id:
        cfg["device_id"] = device_id
    return cfg


def new_device(devdir, image, broker_host, broker_port, ca_der=None, unique_id="a0b1c2d3e4f5",
               ota=None, mqtt=None, heapsize=None, ha=None, **sim_settings):
    """Create (not start) a simulated device: factory `image`, our boot.py/main.py, config.json (with
    `ha`, Home Assistant's settings, when given), CA."""
    fs = {}
    for name in ("boot.py", "main.py"):
        with open(os.path.join(REPO, name), "rb") as f:
            fs[name] = f.read()
    cfg = device_config(broker_host, broker_port, ota, mqtt)
    if ha is not None:
        cfg["ha"] = ha
    fs["config.json"] = json.dumps(cfg)
    if ca_der:
        with open(ca_der, "rb") as f:
            fs["ca.der"] = f.read()
    device = Device(devdir, heapsize=heapsize or FLEET_HEAP)
    device.create(image, fs_files=fs, unique_id=unique_id, **sim_settings)
    return device


def driver_device(devdir, image, driver, ca_der, files=None, heapsize=None, max_boots=20, **sim_settings):
    """Create (not start) a simulated device that runs a driver script as its main.py instead of the
    agent (the e2e tests' and benchmarks' drivers): factory `image`, our boot.py, the CA, `files`."""
    fs = dict(files or {})
    for target, source in (("main.py", driver), ("boot.py", os.path.join(REPO, "boot.py")), ("ca.der", ca_der)):
        with open(source, "rb") as f:
            fs[target] = f.read()
    device = Device(devdir, heapsize=heapsize or FLEET_HEAP, max_boots=max_boots)
    device.create(image, fs_files=fs, **sim_settings)
    return device


@contextlib.contextmanager
def lab(root, images, extra_files=None, broker_tls=False, **broker_options):
    """What an end-to-end test stands on: a test CA, root/www holding firmware-<name>.bin for each
    {name: image bytes} (plus extra_files {file name: bytes}), a real broker and nginx serving www over
    TLS. Yields {root, www, pki, broker, web, images}; stops both servers on the way out.
    broker_tls=True adds the broker's TLS listener (broker.tls_port) with the lab's server certificate;
    other keywords (password_file=, acl_file=) go to Broker as they are."""
    from devkit.broker import Broker
    from devkit.nginx import Nginx
    from devkit.tls import make_pki

    root = str(root)
    pki = make_pki(os.path.join(root, "pki"))
    www = os.path.join(root, "www")
    os.makedirs(www, exist_ok=True)
    files = dict(("firmware-%s.bin" % name, blob) for name, blob in images.items())
    files.update(extra_files or {})
    for name, blob in files.items():
        with open(os.path.join(www, name), "wb") as f:
            f.write(blob)
    tls = {"certfile": pki.server_cert, "keyfile": pki.server_key} if broker_tls else None
    with Broker(os.path.join(root, "broker"), tls=tls, **broker_options) as broker, \
            Nginx(www, pki.server_cert, pki.server_key) as web:
        yield {"root": root, "www": www, "pki": pki, "broker": broker, "web": web, "images": images}
