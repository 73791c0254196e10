# The words operators see, pinned: every OtaError the device package or otactl makes and every line
# they print() during a unit test must be one of host_tests/messages.txt.
#
# Why: an operator reads these on the state topic, in `otactl` output and on the serial console, and
# the seed guide's users already search and alert on them. A reason code is tested where it is made;
# the detail beside it ("slot holds N bytes, image needs N") was free to rot, and mutation testing
# showed it: a mutant that garbles or drops the detail survived every test (docs/MUTATION.md).
# Comparing each test's messages with the catalogue catches that, and the catalogue doubles as the
# list of messages, reviewed as a diff whenever one changes (`make messages` rewrites it).
#
# Only messages made by our code count: the caller's module must be under ota. or otactl. (a test's
# own OtaError does not). Numbers become "#", temporary paths "<tmp>", hex numbers and long hex
# strings "<hex>", the checkout "<repo>", the interpreter "<python>": they vary with the machine, the
# run and the test data, the words do not. internal_error is left out: its detail is CPython's wording of an
# unexpected exception, which changes between Python versions.
import builtins
import functools
import os
import re
import sys

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "messages.txt")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_ENV = "OTA_MESSAGES_RECORD"  # a file: append what the tests make instead of checking it
_FOREIGN_REASONS = ("internal_error",)
_TMP = re.compile(r"/tmp/[^\s'\"(),:]+")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{16,}\b")  # byte values, keys, hashes: test data
_NUMBER = re.compile(r"\d+")
# mutmut runs every function under a mangled name (x_f__mutmut_orig, xǁCǁm__mutmut_orig), which a
# message quoting a Python error about it ("C.m() got an unexpected keyword argument") then carries.
_MUTMUT = re.compile("x\u01c1\\w+?\u01c1(\\w+?)__mutmut_(?:orig|\\d+)|\\bx_(\\w+?)__mutmut_(?:orig|\\d+)")

_current = None  # the set the running unit test records into, or None
_installed = False


def normalise(text):
    text = _MUTMUT.sub(lambda m: m.group(1) or m.group(2), text)
    text = text.replace(sys.executable, "<python>").replace(_REPO, "<repo>")  # where the checkout is
    text = _NUMBER.sub("#", _HEX.sub("<hex>", _TMP.sub("<tmp>", text)))
    return text.encode("unicode_escape").decode("ascii")  # one line each, whatever the bytes


def _ours(frame):
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name.startswith("ota.") or name.startswith("otactl.")


def _install():
    # Once per process: wrap OtaError.__init__ and print(). They record only while a test runs.
    global _installed
    if _installed:
        return
    from ota.errors import OtaError

    original_init = OtaError.__init__
    original_print = builtins.print

    def init(self, reason, *args, **kwargs):
        # No default of its own: OtaError's (detail="") must stay the one that counts in a test.
        original_init(self, reason, *args, **kwargs)
        if _current is not None and reason not in _FOREIGN_REASONS and _ours(sys._getframe(1)):
            _current.add(normalise("%s: %s" % (reason, self.detail)))

    def printing(*args, **kwargs):
        if _current is not None and _ours(sys._getframe(1)):
            sep = kwargs.get("sep")
            _current.add("print: " + normalise((" " if sep is None else sep).join(str(a) for a in args)))
        return original_print(*args, **kwargs)

    OtaError.__init__ = init
    builtins.print = printing
    _installed = True


def catalogue(path):
    # Read again only when the file changed: once per process, not once per unit test.
    stat = os.stat(path)
    return _read(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read(path, mtime_ns, size):
    with open(path, encoding="utf-8") as f:
        return frozenset(line.rstrip("\n") for line in f if line.strip())


class Watch:
    # One test's messages: start() before it, finish() after; finish returns those not catalogued.
    def __init__(self):
        self.seen = set()
        self._outer = None

    def start(self):
        global _current
        _install()
        self._outer, _current = _current, self.seen

    def finish(self):
        global _current
        _current = self._outer  # a watch inside a test hands recording back to the test's own
        record = os.environ.get(RECORD_ENV)
        if record:
            with open(record, "a", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in sorted(self.seen))
            return []
        known = catalogue(PATH)
        return sorted(m for m in self.seen if m not in known)
