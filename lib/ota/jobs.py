# Persisted job bookkeeping: one small JSON file on the device filesystem, so that what happened
# survives machine.reset() (update boot, rollback, power cut) and a trigger is never run twice.
#
#   {"current": {"id": "job-42", "type": "ota_trigger", "url": "https://...", "state": "rebooting",
#                "from_version": "1.1.0", "from_slot": "ota_0", "to_version": "1.2.0",
#                "to_slot": "ota_1", "to_otadata": "VALID", "started": 1767225600, "reason": null,
#                "detail": null},
#    "seen": ["job-40", "job-41", "job-42"]}
#
# current.state: downloading (written when the job starts), rebooting (set_boot done, reset next),
# rolling_back (the health gate failed and resets into the old slot), then one of the terminal
# states ok / failed / rolled_back once the outcome has been reported.
# to_otadata (updates): to_slot's otadata state when the job started (ota.otadata; health.classify).
# seen: the last MAX_SEEN job ids, oldest first: a QoS 1 redelivery, or the retained trigger that the
# broker hands out again at every subscribe, must not start the same job again (also a failed one,
# else a retained trigger for a broken release would loop after every reconnect). It judges unsigned
# triggers only: anyone on the broker can add to it, so signed ones are judged by their signed seq
# (replay.py), and a signed trigger refused before its signature verified is never added.
# Raises OSError only from save() (filesystem full or gone); a missing or corrupt file reads as empty
# (a record that is not an object of JSON scalars, or seen ids that are not strings, are dropped).
import json
import os

PATH = "ota_job.json"
MAX_SEEN = 16
TERMINAL = ("ok", "failed", "rolled_back")


class Jobs:
    def __init__(self, path=PATH):
        self.path = path
        self.current = None
        self.seen = []
        try:
            with open(path) as f:
                data = json.load(f)
            self.current = _record(data.get("current"))
            self.seen = [i for i in data.get("seen", []) if type(i) is str][-MAX_SEEN:]
        except OSError:  # no file yet: a device that never ran a job
            pass
        except (ValueError, AttributeError, TypeError):  # corrupt (power cut mid-write on FAT)
            print("jobs: %s unreadable, starting empty" % path)
            self.current, self.seen = None, []

    def seen_before(self, job_id):
        return job_id in self.seen

    def start(self, job, state, remember=True, **fields):
        # Records a new current job and (unless told not to) remembers its id; written before
        # anything irreversible.
        record = {"id": job.get("id"), "type": job.get("type"), "url": job.get("url"),
                  "state": state, "to_version": job.get("version"), "reason": None, "detail": None}
        record.update(fields)
        self.current = record
        if remember and job.get("id") is not None and job["id"] not in self.seen:
            self.seen.append(job["id"])
            del self.seen[:-MAX_SEEN]
        self.save()

    def update(self, **fields):
        self.current.update(fields)
        self.save()

    def save(self):
        # Write-then-rename: on littlefs the rename is atomic, so a power cut leaves old or new.
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"current": self.current, "seen": self.seen}, f)
        try:
            os.rename(tmp, self.path)
        except OSError:  # FAT refuses to rename over an existing file (littlefs, the default, does not)
            os.remove(self.path)
            os.rename(tmp, self.path)


# The job record as read back: a dict of JSON scalars, else None. Anything else (a file written by
# other code, or damaged) made the agent's boot raise at every start: a reset loop (issue 10).
def _record(value):
    if type(value) is not dict:
        return None
    for key in value:
        if type(key) is not str or not (value[key] is None or type(value[key]) in (str, int, bool)):
            return None
    return value
