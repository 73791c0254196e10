"""`make sim` / `python -m devkit sim` (`otactl sim` forwards here): one simulated ESP32-C3 for a
person to watch and poke.

Starts a broker (mosquitto or amqtt) and the dev HTTPS server with a fresh CA unless told where they
are, builds firmware from this checkout, boots the device and streams its console. It prints the
commands to send it a trigger from another terminal. The device reboots as often as it is told to
(no bound on its boots, unlike the tests' devices) and runs until it is stopped: Ctrl-C (or SIGTERM)
stops everything it started.
"""
import hashlib
import os

from devkit.simfleet import REPO
from otactl.cmd_release import file_stem
from ota.errors import OtaError


def argparse_sim(parser):
    parser.add_argument("--workdir", default=os.path.join(REPO, "devices", "sim"),
                        help="device folder, CA, served files (recreated unless --keep)")
    parser.add_argument("--version", default="1.0.0", help="version of the factory firmware")
    parser.add_argument("--keep", action="store_true", help="boot the existing device as it is")
    parser.add_argument("--heapsize", default=None, help="micropython -X heapsize (default: the fleet's)")


def do_sim(args):
    from devkit import simfleet
    from devkit.broker import Broker, find_backend
    from devkit.devserver import DevServer
    from devkit.tls import make_pki
    from sim.runner import Device

    workdir = os.path.abspath(args.workdir)
    if find_backend() is None:
        raise OtaError("missing_dependency", "no MQTT broker: install mosquitto (apt-get install mosquitto)")
    started = []
    try:
        broker = Broker(os.path.join(workdir, "broker")).start()
        started.append(broker)
        pki = make_pki(os.path.join(workdir, "pki"))
        www = os.path.join(workdir, "www")
        os.makedirs(www, exist_ok=True)
        web = DevServer(www, pki.server_cert, pki.server_key).start()
        started.append(web)
        if args.keep and os.path.exists(os.path.join(workdir, "device", "flash.bin")):
            device = Device(os.path.join(workdir, "device"), heapsize=args.heapsize or simfleet.FLEET_HEAP)
            device.write_fs("config.json", _json(simfleet.device_config(broker.host, broker.port)))
            with open(pki.ca_der, "rb") as f:
                device.write_fs("ca.der", f.read())
        else:
            device = simfleet.new_device(os.path.join(workdir, "device"), simfleet.firmware(args.version),
                                         broker.host, broker.port, ca_der=pki.ca_der, heapsize=args.heapsize)
        device.max_boots = None  # a person watches it: it reboots after every update until stopped
        newer = _bump(args.version)
        blob = simfleet.firmware(newer)
        name = file_stem(newer) + ".bin"
        with open(os.path.join(www, name), "wb") as f:
            f.write(blob)
        url = web.url(name)
        print("otactl sim: device %s, broker %s:%d, files %s served at %s"
              % (device.devdir, broker.host, broker.port, www, web.url("")))
        print("otactl sim: from another terminal, update it to %s:\n  mosquitto_pub -p %d -t /switch/cmd/root"
              " -m '{\"type\":\"ota_trigger\",\"url\":\"%s\",\"sha256\":\"%s\"}'\n  mosquitto_sub -p %d -v -t"
              " '/switch/state/#'" % (newer, broker.port, url, hashlib.sha256(blob).hexdigest(), broker.port))
        print("otactl sim: %s after %d boot(s)" % (device.watch(), len(device.boots())))
    finally:
        for service in reversed(started):
            service.stop()
    return 0


def _json(value):
    import json

    return json.dumps(value)


def _bump(version):
    parts = version.split(".")
    try:
        parts[-1] = str(int(parts[-1]) + 1)
    except ValueError:
        parts.append("1")
    return ".".join(parts)

