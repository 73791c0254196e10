"""What the device benchmarks share (ota_bench, diet_bench, artifact_bench): a web root with a test CA,
a simulated ESP32-C3 running one of this folder's drivers as its main.py, the driver's result lines,
and the table of metrics they print."""
import contextlib
import json
import os
import shutil
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def scratch(prefix):
    """A temporary folder for one run, removed afterwards."""
    root = tempfile.mkdtemp(prefix=prefix)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def tls_www(root, files):
    """-> (pki, www): a test CA and server certificate under root/pki, `files` {name: bytes} in root/www."""
    from devkit.tls import make_pki

    pki = make_pki(os.path.join(root, "pki"))
    www = os.path.join(root, "www")
    os.makedirs(www)
    for name, blob in files.items():
        with open(os.path.join(www, name), "wb") as f:
            f.write(blob)
    return pki, www


def driver_device(root, name, image, pki, driver, jobs_file, jobs, heapsize, **sim_settings):
    """A device (one boot) on factory `image` whose main.py is bench/`driver`, reading `jobs` from `jobs_file`."""
    from devkit import simfleet

    return simfleet.driver_device(os.path.join(root, name), image, os.path.join(REPO, "bench", driver),
                                  pki.ca_der, files={jobs_file: json.dumps(jobs)}, heapsize=heapsize,
                                  max_boots=1, **sim_settings)


def rows_of(device, tag):
    """The driver's "<tag> {json}" lines, by their "name"."""
    out = {}
    for line in device.lines():
        if line.startswith(tag + " "):
            row = json.loads(line[len(tag) + 1:])
            out[row["name"]] = row
    return out


def print_table(rows, goal_width):
    """rows: (metric, measured, goal, met: True, False or None for no verdict)."""
    width = max(len(r[0]) for r in rows)
    mwidth = max(len(str(r[1])) for r in rows)
    print("%-*s  %-*s  %-*s  %s" % (width, "metric", mwidth, "measured", goal_width, "goal", "met?"))
    print("-" * (width + mwidth + goal_width + 12))
    for metric, measured, goal, met in rows:
        mark = "" if met is None else ("yes" if met else "NO")
        print("%-*s  %-*s  %-*s  %s" % (width, metric, mwidth, measured, goal_width, goal, mark))
