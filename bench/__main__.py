"""`make bench` = `python -m bench [NAME ...]`: runs every bench/*_bench.py module that exists (or the
named ones: `python -m bench ota fleet`), in name order. Each module defines main() (or run()), which
measures and prints its own section; it is called with no arguments and sys.argv cut to its own name.
A bench never gates anything: the exit status is 0 whatever the goals say; a module that breaks
prints its error and the next one runs.
"""
import importlib
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def modules(names=()):
    found = sorted(name[:-3] for name in os.listdir(HERE) if name.endswith("_bench.py"))
    if not names:
        return found
    wanted = [n if n.endswith("_bench") else n + "_bench" for n in names]
    return [n for n in wanted if n in found] + ["?" + n for n in wanted if n not in found]


def main(argv=None):
    names = modules(sys.argv[1:] if argv is None else argv)
    for name in names:
        if name.startswith("?"):
            print("bench: no bench/%s.py" % name[1:], file=sys.stderr)
            continue
        print("### bench/%s.py" % name, flush=True)
        started = time.monotonic()
        argv, sys.argv = sys.argv, [os.path.join(HERE, name + ".py")]
        try:
            module = importlib.import_module("bench." + name)
            entry = getattr(module, "main", None) or getattr(module, "run", None)
            if entry is None:
                print("bench: %s has neither main() nor run()" % name)
            else:
                entry()
        except Exception:  # one broken bench must not hide the others' numbers
            print("bench: %s failed:" % name)
            traceback.print_exc(file=sys.stdout)
        finally:
            sys.argv = argv
        print("(%s: %.1f s)\n" % (name, time.monotonic() - started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
