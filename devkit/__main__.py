"""`python -m devkit demo|sim|image`: the dev kit's commands (`make demo`, `make sim`).

The same command table and error path as otactl's CLI (otactl/cli.py): the handlers are the ones
`otactl demo|sim|image` forward to from a checkout, so both spellings behave alike.
"""
import sys

from otactl import cli


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("demo", "sim", "image"):
        return cli.main(argv)
    asked = not argv or argv[0] in ("-h", "--help")
    print("usage: python -m devkit demo|sim|image ...   (the dev kit: make demo, make sim)",
          file=sys.stdout if asked else sys.stderr)
    return 0 if asked else 2


if __name__ == "__main__":
    sys.exit(main())
