# What this device runs and where an update goes, read once at start-up:
#
#   slots = Slots(esp32)
#   slots.running   # label of the running slot ("ota_0")
#   slots.other     # esp32.Partition an update or ota_revert goes to; None: no OTA slots
#   slots.version   # the running image's app descriptor version, None when unreadable
#   slots.project   # ... and its project_name: what an image must carry to be an update (compat.py)
#
# Read early on purpose: get_next_update() allocates 4 KiB, before the heap fragments (MP #8382).
from ota import version
from ota.errors import OtaError


class Slots:
    # esp32: the module (the simulator's, or a unit test's fake). An unreadable descriptor is
    # printed and read as None: the agent must run all the same.
    def __init__(self, esp32):
        running = esp32.Partition(esp32.Partition.RUNNING)
        self.running = running.info()[4]
        try:
            self.other = running.get_next_update()
        except OSError:  # no OTA slots (factory-only build): updates and reverts are refused
            self.other = None
        try:  # version and project_name: what an image must say to be an update of this firmware
            info = version.read_descriptor(running)
            self.version, self.project = info["version"], info["project_name"]
        except (OtaError, OSError) as e:  # reported as null: the agent must run all the same
            print("agent: running version unknown:", e)
            self.version = self.project = None
