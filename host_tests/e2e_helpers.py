# Shared by the e2e update tests (e2e/test_e2e_update.py, _compressed.py, _delta.py): simulated devices
# that run drivers/e2e_driver.py on a jobs.json (one JOB line per job), run side by side, and the checks
# every one of those files makes on them.
import contextlib
import hashlib
import json
import os

from devkit import simfleet
from devkit.devserver import DevServer
from devkit.nginx import Nginx
from paths import DRIVERS

SECTOR = 4096


def sha(blob):
    return hashlib.sha256(blob).hexdigest()


def sectors(size):
    return (size + SECTOR - 1) // SECTOR


def dev_servers(www, pki, faults, cert=None):
    # {name: a started DevServer on www}, each with the fault settings of faults[name] {field: value};
    # cert(name) -> the certificate the server shows (its key beside it), else the CA's server one.
    servers = {}
    for name, settings in faults.items():
        pem = (cert and cert(name)) or pki.server_cert
        servers[name] = DevServer(str(www), pem, pem.replace(".pem", ".key")).start()
        for field, value in settings.items():
            setattr(servers[name].faults, field, value)
    return servers


@contextlib.contextmanager
def serving(www, pki, servers, target):
    # nginx on www (`target`: what its /redirect/* routes lead to) while the block runs; afterwards it
    # and the dev servers {name: DevServer} are stopped. -> nginx
    web = Nginx(str(www), pki.server_cert, pki.server_key, target=target).start()
    try:
        yield web
    finally:
        web.stop()
        for server in servers.values():
            server.stop()


def job_device(world, name, jobs, image, ota):
    # A device on factory `image` whose driver runs `jobs`, each with `ota` under its own "ota" options.
    for job in jobs:
        job["ota"] = dict(ota, **job.get("ota", {}))
    return simfleet.driver_device(str(world["root"] / name), image, os.path.join(DRIVERS, "e2e_driver.py"),
                                  world["pki"].ca_der, files={"jobs.json": json.dumps(jobs)})


def run_jobs(world, negative, success, image, ota, timeout):
    # One device "batch" for all the negative (job, reason, erases) cases, one per success job {name: job};
    # all run at once (up to three boots each). -> (devices, how each device process ended)
    devices = {"batch": job_device(world, "batch", [dict(job) for job, _, _ in negative], image, ota)}
    for name, job in success.items():
        devices[name] = job_device(world, name, [dict(job, name=name)], image, ota)
    for device in devices.values():
        device.start(max_boots=3)
    return devices, {name: device.wait(timeout=timeout) for name, device in devices.items()}


def jobs_of(device):
    out = {}
    for line in device.lines():
        if line.startswith("JOB "):
            job = json.loads(line[4:])
            out[job["name"]] = job
    return out


def assert_refused(device, name, reason, erases):
    # The job failed with `reason`, the boot slot stayed and nothing bootable is left in ota_1; `erases`
    # (unless None) sectors were erased during the job: 0 = refused before the first write. -> its JOB line
    got = jobs_of(device).get(name)
    assert got is not None, device.console()
    assert got.get("reason") == reason, got
    assert got["boot_label"] == "ota_0" and got["other_blank"] is True, got
    if erases is not None:
        assert got["erases"] == erases, got
    return got


def assert_old_firmware_boots(runs):
    # The batch device ran all its jobs and booted 1.0.0 from ota_0 again. -> the device
    device = runs["devices"]["batch"]
    assert runs["results"]["batch"] == "exit", device.console()
    assert [(b["slot"], b["version"]) for b in device.boots()] == [("ota_0", "1.0.0"), ("ota_0", "1.0.0")]
    assert "Traceback" not in device.console()
    return device


def assert_landed(runs, name, image, size, version=None):
    # The job succeeded with the `size` bytes of `image` byte for byte in ota_1 and the device booted it
    # (as `version`, or the version the job reported), each sector of it erased once. -> (device, JOB line, boot counters)
    device = runs["devices"][name]
    assert runs["results"][name] == "exit", device.console()
    got = jobs_of(device)[name]
    assert got.get("result") == "ok", got
    assert got["bytes"] == size and got["sha256"] == sha(image) and got["boot_label"] == "ota_1"
    version = version or got["version"]
    assert [(b["slot"], b["version"]) for b in device.boots()] == [("ota_0", "1.0.0"), ("ota_1", version)]
    ota_1 = device.partition("ota_1")
    assert device.read_flash(ota_1.offset, size) == image
    counters = device.boot_counters(0)
    assert counters["erases_by_partition"]["ota_1"] == sectors(size)
    return device, got, counters


def piece_starts(otaz):
    # Where each piece of an OTAZ container starts in the file.
    from otactl import zimage

    return [offset for offset, _ in zimage.parse_header(otaz)["index"]]
