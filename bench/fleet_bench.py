"""Fleet tooling throughput: how many devices per second otactl triggers and tracks through mosquitto.

    python -m bench.fleet_bench [N ...]       # default: 1000 10000
    run(n) -> dict of numbers

Devices are sim/lightdevice.py light devices, multiplexed: 250 devices per MQTT connection (each
subscribes to its own /switch/cmd/<id> on the shared connection), so 10,000 devices are 40
connections, not 10,000 paho clients (a paho client is a thread plus sockets; 10,000 of them do not
fit a test machine). Every device still has its own topics, its own retained state and its own job
bookkeeping; the broker sees 10,000 subscriptions and 10,000 retained states.

Measured, each through the real broker:
  start      connect, subscribe and publish every retained state
  snapshot   otactl reading the fleet back from the retained states (what `status` and `rollout` do)
  trigger    publishing one per-device QoS 1 trigger per device, every PUBACK received
  rollout    the rollout engine, one stage, no concurrency limit, devices answering at once: every
             device triggered and tracked through downloading .. ok (7 state messages each)

The light devices run in a process of their own by default, as a real fleet is not inside the
operator's Python: with them in the engine's process (`--same-process`) the rollout figure is mostly
the simulated devices' own CPU (their paho threads share the engine's GIL). The default run prints
both rollout figures side by side.
"""
import multiprocessing
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from devkit.broker import Broker  # noqa: E402
from otactl import mqtt, rollout, tracking  # noqa: E402
from otactl.fleet import Fleet  # noqa: E402
from sim.lightdevice import Behavior, LightFleet  # noqa: E402

MANIFEST = {"version": "1.0.1", "url": "https://fw.example/firmware-v1.0.1.bin", "sha256": "ab" * 32,
            "size": 1462272}
PER_CONNECTION = 250


def _light_fleet(host, port, n, per_connection):
    light = LightFleet(host, port, per_connection=per_connection)
    instant = Behavior(download_s=0.0, progress_steps=2, reboot_s=0.0, confirm_s=0.0)
    for i in range(n):
        light.add("dev-%05d" % i, "1.0.0", instant)
    light.start(timeout=120)
    return light


def _fleet_process(host, port, n, per_connection, ready, stop):
    light = _light_fleet(host, port, n, per_connection)
    ready.set()
    stop.wait(600)
    light.stop(clear_retained=False)


class _FleetElsewhere:
    """The light fleet in a child process: start() returns once every device is online."""

    def __init__(self, host, port, n, per_connection):
        context = multiprocessing.get_context("fork")
        self.ready, self.stop_event = context.Event(), context.Event()
        self.process = context.Process(target=_fleet_process, daemon=True,
                                       args=(host, port, n, per_connection, self.ready, self.stop_event))

    def start(self):
        self.process.start()
        if not self.ready.wait(180):
            raise RuntimeError("the light fleet process did not come up")
        return self

    def stop(self, clear_retained=False):
        self.stop_event.set()
        self.process.join(60)


def run(n, per_connection=PER_CONNECTION, same_process=False):
    workdir = tempfile.mkdtemp(prefix="fleet-bench-")
    out = {"devices": n, "connections": -(-n // per_connection)}
    with Broker(os.path.join(workdir, "broker")) as broker:
        t = time.monotonic()
        if same_process:
            light = _light_fleet(broker.host, broker.port, n, per_connection)
        else:
            light = _FleetElsewhere(broker.host, broker.port, n, per_connection).start()
        out["start_s"] = time.monotonic() - t
        conn = mqtt.connect(None, host=broker.host, port=broker.port)
        try:
            t = time.monotonic()
            fleet = Fleet().snapshot(conn, timeout=60)
            out["snapshot_s"] = time.monotonic() - t
            assert len(fleet.devices) == n, "snapshot saw %d of %d" % (len(fleet.devices), n)

            # raw trigger publishing: to a topic nobody subscribes, so devices stay idle
            t = time.monotonic()
            tracker = tracking.Tracker(conn, "bench", 60)
            tracker.send(["bench-nobody-%05d" % i for i in range(n)], lambda d: b'{"type":"bench"}')
            out["trigger_s"] = time.monotonic() - t

            t = time.monotonic()
            engine = rollout.Rollout(conn, MANIFEST, rollout.Options((1.0,), max_concurrent=n, device_timeout=120),
                                     os.path.join(workdir, "rollout.jsonl"))
            summary = engine.run()
            out["rollout_s"] = time.monotonic() - t
            out["read_back"] = engine.tracker.recovered  # final states the broker dropped on the way
            assert summary["outcomes"] == {"ok": n}, summary
        finally:
            conn.close()
            light.stop(clear_retained=False)
    out["snapshot_devices_per_s"] = n / out["snapshot_s"]
    out["trigger_devices_per_s"] = n / out["trigger_s"]
    out["rollout_devices_per_s"] = n / out["rollout_s"]
    out["state_messages_per_s"] = n * 7 / out["rollout_s"]
    return out


def main(argv=None):
    args = list(argv if argv is not None else sys.argv[1:])
    same_only = "--same-process" in args
    sizes = [int(a) for a in args if a != "--same-process"] or [1000, 10000]
    print("fleet bench: light devices through mosquitto, %d devices per MQTT connection" % PER_CONNECTION)
    print("%8s %6s %8s %10s %14s %14s %14s %10s %22s" % (
        "devices", "conns", "start s", "snapshot/s", "trigger dev/s", "rollout dev/s", "state msg/s", "read back",
        "rollout, same process"))
    for n in sizes:
        same = run(n, same_process=True)
        r = same if same_only else run(n)
        print("%8d %6d %8.2f %10.0f %14.0f %14.0f %14.0f %10d %13.0f (%.2fx)" % (
            n, r["connections"], r["start_s"], r["snapshot_devices_per_s"], r["trigger_devices_per_s"],
            r["rollout_devices_per_s"], r["state_messages_per_s"], r["read_back"], same["rollout_devices_per_s"],
            same["rollout_devices_per_s"] / r["rollout_devices_per_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
