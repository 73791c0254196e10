# MicroPython driver (run by host_tests/sim/test_diet.py with .venv/bin/micropython): the update's
# workspace (ota/workspace.py) made with MicroPython's own ssl from a real CA file, then two updates
# of an image file into a file-backed fake partition: one with the workspace, one without, each
# measured in GC bytes allocated (micropython.mem_total() deltas), after a first update that is not.
#
#   micropython mp_workspace.py LIBDIR IMAGE SLOTFILE CA_DER SHA256
# Prints one line: "workspace context=<type> ok=2 contexts_made=N reused=R with=B without=B"
# contexts_made: https.context() calls during the two updates (the workspace's own is not counted);
# reused: connections of the update with the workspace that got the workspace's context.
import gc
import sys

import micropython
from fileflash import Esp32, FilePartition, FileResponse

sys.path.insert(0, sys.argv[1])
from ota import https as real_https
from ota import update
from ota.workspace import Workspace

IMAGE, SLOTFILE, CA, SHA256 = sys.argv[2:6]
FilePartition.path = SLOTFILE  # ota_1 at its start; ota_0 has no file


class Https:
    made = 0
    given = []
    workspace = None

    @staticmethod
    def context(ca_path):
        Https.made += 1
        return real_https.context(ca_path)

    @staticmethod
    def open(url, start=0, tls_context=None, **kw):
        ws = Https.workspace
        Https.given.append(ws is not None and tls_context is ws.tls_context)
        return FileResponse(IMAGE)


def one(workspace):
    Https.workspace = workspace
    gc.collect()
    before = micropython.mem_total()
    result = update.run("https://x/fw.bin", https=Https, esp32=Esp32, running="0.0.1",
                        running_project="micropython", sha256=SHA256, config={"ca_path": CA},
                        workspace=workspace)
    return micropython.mem_total() - before, result["result"] == "ok"


one(None)  # the first update imports what update.run imports lazily (compat, version): not measured
Https.made, Https.given = 0, []
ws = Workspace({"ca_path": CA, "chunk_size": 4096})
ws.make_context()
with_ws, ok1 = one(ws)
reused = sum(1 for g in Https.given if g)
without, ok2 = one(None)
print("workspace context=%s ok=%d contexts_made=%d reused=%d with=%d without=%d"
      % (type(ws.tls_context).__name__, ok1 + ok2, Https.made, reused, with_ws, without))
