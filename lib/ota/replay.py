# Replay protection for signed triggers: the highest sequence number the device accepted, per signing
# key, kept in a small file of its own. A signed trigger whose seq is not above it is refused
# (`replayed`), however many other triggers came in between and whatever the clock says: neither a
# short list of ids nor an unauthenticated clock (NTP) decides. Only signature.check writes here, and
# only after the signature verified: no unauthenticated message can move it (docs/SIGNING.md).
#
#   store = Replay(path)
#   store.highest(key_id) -> int (0: nothing accepted from that key)
#   store.accept(key_id, seq)       # persisted before the job starts; raises OSError
#
# Power cuts: the numbers only grow, so any copy that parses is a lower bound of the truth. accept()
# writes the new map to PATH.tmp and renames it over PATH; the reader takes, per key, the highest of
# both files. A cut while PATH.tmp is written leaves PATH (the old map: the trigger being accepted has
# not run yet); a cut between FAT's remove and rename leaves PATH.tmp (the new map). Never a value
# that was not accepted.
import json
import os

PATH = "ota_seq.json"


def key_id(key):
    # 16 hex digits of the 32-byte public key: enough to tell the keys of one device apart.
    from binascii import hexlify

    return hexlify(key[:8]).decode()


def _read(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):  # absent, or torn by a power cut
        return {}
    out = {}
    if isinstance(data, dict):
        for name, seq in data.items():
            if isinstance(name, str) and isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
                out[name] = seq
    return out


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Replay:
    def __init__(self, path=PATH):
        self.path = path
        self.seqs = _read(path)
        pending = _read(path + ".tmp")
        for name, seq in pending.items():
            if seq > self.seqs.get(name, 0):
                self.seqs[name] = seq
        if pending and not _exists(path):
            # A cut between FAT's remove and rename left PATH.tmp the only copy: make it PATH again
            # before the next accept() opens PATH.tmp for writing (and a second cut there would
            # leave nothing, so captured triggers would replay).
            try:
                os.rename(path + ".tmp", path)
            except OSError as e:
                print("replay: could not restore %s: %s" % (path, e))

    def highest(self, key):
        return self.seqs.get(key, 0)

    def accept(self, key, seq):
        # Only keys the device trusts get here (after a verified signature), so the map stays small.
        # Raises OSError (filesystem full or gone): the caller refuses the trigger then, since a
        # trigger that could not be remembered could run twice.
        seqs = dict(self.seqs)
        seqs[key] = seq
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(seqs, f)
        try:
            os.rename(tmp, self.path)
        except OSError:  # FAT refuses to rename over an existing file (littlefs does not)
            os.remove(self.path)
            os.rename(tmp, self.path)
        self.seqs = seqs
