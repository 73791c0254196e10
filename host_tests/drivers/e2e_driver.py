# Device-side driver for host_tests/e2e/test_e2e_update.py: the simulated device's fs/main.py instead of
# the agent. It runs the real data path (ota.update.run, frozen into the booted image) once per job of
# jobs.json and prints one line per job, so many negative cases share one device process:
#
#   JOB {"name": ..., "result": "ok" | "reason": "bad_checksum", "detail": ..., "boot_label": "ota_0",
#        "other_blank": true, "erases": 0, ...}
#
# jobs.json: [{"name", "url", "sha256"?, "size"?, "version"?, "token"?, "project"?, "artifact"?
# (update.run's: compressed and delta, docs/COMPRESSED.md), "ota": {overrides}}, ...]
# ("token_origin" and other "ota" settings go in "ota"). When the jobs are done, jobs.json is renamed
# (so the next boot does not repeat them) and the device resets; the next boot prints
# BOOT {"label": running slot, "version": ...} and returns. Nothing here is needed on a real board
# except the esp32 module; the erase counter comes from the simulator's flash when it is there.
import gc
import json
import os

import esp32
import machine
from ota import config, update, version
from ota.errors import OtaError

try:
    import simflash  # the simulator's instruments (absent on a board)
except ImportError:
    simflash = None


def erases():
    return simflash.counters["sector_erases"] if simflash else -1


def other_slot_blank(label):
    head = bytearray(32)
    esp32.Partition(label).readblocks(0, head)
    return head == b"\xff" * 32


def run_job(job):
    cfg = config.merge({"ota": job.get("ota", {})})["ota"]
    config.validate(config.merge({"ota": cfg}))
    other = esp32.Partition(esp32.Partition.RUNNING).get_next_update().info()[4]
    before = erases()
    out = {"name": job["name"]}
    gc.collect()
    try:
        result = update.run(job["url"], sha256=job.get("sha256"), size=job.get("size"),
                            version=job.get("version"), token=job.get("token"), config=cfg,
                            project=job.get("project"), artifact=job.get("artifact"))
        out.update(result)
    except OtaError as e:
        out["reason"], out["detail"] = e.reason, e.detail
    out["erases"] = erases() - before
    out["boot_label"] = esp32.Partition(esp32.Partition.BOOT).info()[4]
    out["other_blank"] = other_slot_blank(other)
    out["mem_free"] = gc.mem_free()
    print("JOB " + json.dumps(out))
    return out


def main():
    # As any program on the board: the RTC starts at 2000-01-01 and no certificate verifies before
    # the clock is set (docs/CHIP.md).
    import ntptime

    ntptime.settime()
    running = esp32.Partition(esp32.Partition.RUNNING)
    try:
        with open("jobs.json") as f:
            jobs = json.load(f)
    except OSError:
        jobs = None
    if jobs is None:
        info = version.read_descriptor(running)
        print("BOOT " + json.dumps({"label": running.info()[4], "version": info["version"]}))
        return
    for job in jobs:
        run_job(job)
    os.rename("jobs.json", "jobs.done")
    print("DONE")
    jobs = None
    # The simulator saves its counters at reset, in this same heap: give it the room back.
    gc.collect()
    machine.reset()


main()
