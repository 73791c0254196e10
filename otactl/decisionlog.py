"""The decision log of a rollout (and of revert): JSON lines, one {"event": ..., "t": unix time,
"rollout": id, ...} object per line, appended.

    log = Log(path, rollout="v1.0.1-ab12cd34")
    log.write("start", durable=True, ...)     # flushed; durable: fsynced before it returns
    records = Log.read(path)                  # every complete record; a torn last line is left out

Crash safety (a power cut of the operator's machine, not only a crash of otactl):
- a record is complete only with its newline: a last line without one was being written when the
  power went; read() leaves it out, and the first write() after it cuts it off (repair before
  append), so the next record never lands on the end of a torn one;
- records that decide something (start, the triggers of a batch, stage, abort, done) are fsynced
  before anything acts on them: the rollout fsyncs a batch's trigger records BEFORE it sends the
  triggers, so after a power cut a device is either in the log (watched on resume, never sent again)
  or was never sent. Outcomes are only flushed: one lost is read back from the device's retained
  state on resume;
- a new file's directory entry is fsynced too, or the whole log can vanish with the power.
"""
import json
import os
import time

from ota.errors import OtaError


class Log:
    def __init__(self, path, rollout=None):
        self.path = path
        self.rollout = rollout  # every record carries it: resume counts its own records only
        self.file = None  # opened at the first write: a refused rollout leaves no file

    def write(self, event, durable=False, **fields):
        record = {"event": event, "t": round(time.time(), 3)}
        if self.rollout is not None:
            record["rollout"] = self.rollout
        record.update(fields)
        if self.path:
            if self.file is None:
                self.file = self._open()
            self.file.write((json.dumps(record, separators=(",", ":")) + "\n").encode())
            self.file.flush()
            if durable:
                os.fsync(self.file.fileno())
        return record

    def sync(self):
        """fsync what was written (after a batch of records written with durable=False)."""
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def _open(self):
        created = not os.path.exists(self.path)
        f = open(self.path, "ab")
        if not created:
            _repair(f, self.path)
        else:
            directory = os.path.dirname(os.path.abspath(self.path))
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return f

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    @staticmethod
    def read(path):
        """The complete records of `path`. Raises OtaError bad_log when it cannot be read, a complete
        line is not a JSON object, or it does not start with a rollout's start record."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise OtaError("bad_log", "cannot read %s: %s" % (path, e.strerror))
        lines = data.split(b"\n")[:-1]  # the part after the last newline is torn (or empty)
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, UnicodeError, RecursionError):
                raise OtaError("bad_log", "%s line %d is not JSON" % (path, number))
            if not isinstance(record, dict) or not isinstance(record.get("event"), str):
                raise OtaError("bad_log", "%s line %d is not a log record" % (path, number))
            records.append(record)
        if not records or records[0].get("event") != "start":
            raise OtaError("bad_log", "%s does not start with a rollout's start record" % path)
        return records


def _repair(f, path):
    # Cut a torn last line (no newline: the write was cut by a crash) before appending after it.
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    with open(path, "rb") as r:
        keep = size
        while keep > 0:
            start = max(0, keep - 4096)
            r.seek(start)
            block = r.read(keep - start)
            if keep == size and block.endswith(b"\n"):
                return  # intact
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
    f.truncate(keep)
    f.seek(0, os.SEEK_END)
    os.fsync(f.fileno())
