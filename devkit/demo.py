"""`make demo` / `python -m devkit demo` (`otactl demo` forwards here): the whole OTA cycle on one simulated ESP32-C3, on this machine.

A test CA and server certificate, a real broker (mosquitto, or amqtt where it is missing), a real
HTTPS server (nginx, or our dev server where it is missing), firmware 1.0.0 (factory) and 1.0.1 (a
1.7 MB image), released with `otactl release`'s checks; one simulated device running this checkout's
boot.py/main.py on the real MicroPython binary; the trigger published exactly as the seed guide does
(plus sha256). Prints what the operator would see on the state topic and ends with a summary.
Exit 0 when the device confirmed 1.0.1; otherwise 1 with the reason. Every process it started is
stopped on the way out.
"""
import hashlib
import json
import os
import shutil
import time

from devkit.simfleet import REPO
from ota.errors import OtaError

DEVICE_ID = "a0b1c2d3e4f5"
NEW_SIZE = 1713728  # the size of the official MicroPython v1.24.1 C3 app (docs/CHIP.md §3)
LINK_RATE = 512 * 1024  # bytes/s: a Wi-Fi-ish link, so the progress is visible (localhost is instant)


def argparse_demo(parser):
    parser.add_argument("--workdir", default=os.path.join(REPO, "build", "demo"),
                        help="where the CA, images, broker and device live (recreated)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds before giving up")
    parser.add_argument("--server", choices=("auto", "nginx", "dev"), default="auto")


class _Clock:
    def __init__(self):
        self.start = time.monotonic()

    def say(self, text):
        print("[%5.1fs] %s" % (time.monotonic() - self.start, text), flush=True)


def _bar(progress, width=30):
    filled = int(width * (progress or 0) / 100)
    return "[" + "#" * filled + "." * (width - filled) + "] %3d%%" % (progress or 0)


def _servers(workdir, pki, server, clock):
    from devkit.devserver import DevServer
    from devkit.nginx import Nginx, find_nginx

    www = os.path.join(workdir, "www")
    if server == "nginx" or (server == "auto" and find_nginx()):
        if not find_nginx():
            raise OtaError("missing_dependency", "nginx is not installed (apt-get install nginx-light)")
        web = Nginx(www, pki.server_cert, pki.server_key, limit_rate=LINK_RATE).start()
        clock.say("HTTPS server: nginx %s (rate-limited to %d KB/s like a Wi-Fi link)"
                  % (web.url(""), LINK_RATE // 1024))
    else:
        web = DevServer(www, pki.server_cert, pki.server_key).start()
        web.faults.trickle = LINK_RATE
        clock.say("HTTPS server: otactl's dev server %s (%s)"
                  % (web.url(""), "nginx not found" if server == "auto" else "--server dev"))
    return web


def _release(workdir, version, blob, base_url):
    # What `otactl release` does: the device's own image checks, size against the slot, sha256.
    from otactl import firmware_image
    from otactl.cmd_image import DEFAULT_PARTITIONS, slot_size_from
    from otactl.cmd_release import file_stem

    report = firmware_image.inspect_image(blob, slot_size=slot_size_from(DEFAULT_PARTITIONS))
    if report.verdict:
        raise OtaError(*report.refusal())
    name = file_stem(version) + ".bin"
    with open(os.path.join(workdir, "www", name), "wb") as f:
        f.write(blob)
    return {"url": base_url + name, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob),
            "version": version}


def do_demo(args):
    from devkit import simfleet
    from devkit.broker import Broker, Watcher, find_backend
    from devkit.tls import make_pki

    clock = _Clock()
    workdir = os.path.abspath(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.join(workdir, "www"))
    if find_backend() is None:
        raise OtaError("missing_dependency", "no MQTT broker: install mosquitto (apt-get install mosquitto)")
    pki = make_pki(os.path.join(workdir, "pki"))
    clock.say("test CA made: %s goes on the device as ca.der" % os.path.relpath(pki.ca_der, REPO))
    started = []
    device = watch = None
    try:
        broker = Broker(os.path.join(workdir, "broker")).start()
        started.append(broker)
        clock.say("MQTT broker: %s on %s:%d" % (broker.backend.name, broker.host, broker.port))
        web = _servers(workdir, pki, args.server, clock)
        started.append(web)
        old = simfleet.firmware("1.0.0")
        new = simfleet.firmware("1.0.1", size=NEW_SIZE)
        release = _release(workdir, "1.0.1", new, web.url(""))
        clock.say("firmware 1.0.0 (factory, %d bytes) and 1.0.1 (%d bytes) built; 1.0.1 released: %s"
                  % (len(old), len(new), release["url"]))
        watch = Watcher(broker.host, broker.port)
        device = simfleet.new_device(os.path.join(workdir, "device"), old, broker.host, broker.port,
                                     ca_der=pki.ca_der, unique_id=DEVICE_ID,
                                     ota={"progress_interval_s": 1})
        device.start()
        clock.say("device %s: powered on (simulated ESP32-C3, MicroPython %s)"
                  % (DEVICE_ID, "-X heapsize=" + device.heapsize))
        return _watch_update(args, clock, device, watch, release)
    finally:
        if device is not None:
            device.stop()
        if watch is not None:
            watch.close()
        for service in reversed(started):
            service.stop()


def _watch_update(args, clock, device, watch, release):
    topic = "/switch/state/" + DEVICE_ID
    deadline = time.monotonic() + args.timeout

    def wait(predicate, what, start=0):
        left = deadline - time.monotonic()
        try:
            return watch.wait_for(lambda m: m.topic == topic and predicate(m), timeout=max(left, 0.1),
                                  start=start)
        except TimeoutError:
            tail = "".join(device.console().splitlines(True)[-8:])
            raise OtaError("demo_timeout", "no %s from the device in %ds; device console:\n%s"
                           % (what, args.timeout, tail))

    idle = wait(lambda m: m.state == "idle", "idle state")
    clock.say("device: idle  version %s  slot %s  free heap %s"
              % (idle.get("version"), idle.get("slot"), idle.get("heap")))
    trigger = {"type": "ota_trigger", "url": release["url"], "sha256": release["sha256"]}
    payload = json.dumps(trigger, separators=(",", ":"))
    print("\n$ mosquitto_pub -t \"/switch/cmd/root\" -m '%s'\n" % payload, flush=True)
    index = len(watch.messages)
    watch.publish("/switch/cmd/root", payload.encode())
    t_trigger = time.monotonic()
    lowest_heap = idle.get("heap")
    shown = set()
    while True:
        message = wait(lambda m: True, "state update", start=index)
        index = watch.messages.index(message) + 1
        heap = message.get("heap")
        if isinstance(heap, int) and (lowest_heap is None or heap < lowest_heap):
            lowest_heap = heap
        name = message.state
        if name == "downloading":
            total = message.get("total")
            clock.say("device: downloading %s  %s/%s bytes" % (_bar(message.get("progress")),
                                                                 message.get("bytes") or 0, total or "?"))
        elif name not in shown or name in ("failed", "rolled_back"):
            detail = " ".join("%s=%s" % (k, message.get(k)) for k in ("version", "slot", "reason")
                              if message.get(k) is not None)
            clock.say("device: %-11s %s" % (name, detail))
        shown.add(name)
        if name == "ok" and message.get("version") == release["version"]:
            break
        if name in ("failed", "rolled_back"):
            raise OtaError(message.get("reason") or name, message.get("detail") or "the update failed")
    elapsed = time.monotonic() - t_trigger
    otadata = device.read_otadata()
    entry = otadata["entries"][otadata["active"]]
    boots = device.boots()
    print("\nsummary: %s -> %s on %s (otadata: %s, seq %d), %d bytes in %.1f s (%.0f KB/s), %d boots,"
          " lowest free heap reported %s bytes"
          % (idle.get("version"), message.get("version"), otadata["slot"], entry["state_name"], entry["seq"],
             release["size"], elapsed, release["size"] / elapsed / 1024, len(boots), lowest_heap),
          flush=True)
    return 0
