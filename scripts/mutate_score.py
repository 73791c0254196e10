"""The score of the last `make mutate` run (scripts/mutate.sh), from mutmut's own records.

Run from the staging tree (build/mutate). Prints one line per module and the totals, and writes
survivors.txt: each mutant that survived (or that no selected test reached), as a diff of its function.

    mutate_score.py STAGE [--base EARLIER_STAGE]   the score; with --base, the earlier run's verdicts
                                                   stand where this run did not check the mutant again
    mutate_score.py --again EARLIER_STAGE          the mutants to run again after new tests: every
                                                   survivor or unchecked mutant of the earlier run, and
                                                   every mutant of a module whose source changed since
                                                   (its mutants are numbered anew), as mutmut's names

Two scores. "all": killed / checked, every mutant mutmut made. "behaviour": the same without the
mutants that change nothing but the words of a message (an OtaError's detail, print()'s arguments,
a string constant that is not a code), which no test should pin word for word. Reason codes, field
names, topics and every other string that a program compares are snake_case or contain no space,
and count in both scores.
"""
import ast
import difflib
import glob
import json
import os
import re
import shutil
import sys

from mutmut.__main__ import status_by_exit_code

_CODE = re.compile(r"^[A-Za-z0-9_./:*#+-]*$")  # a code, name, path or format a program compares


def functions(path):
    # {function name: (source, ast node)} for every def in a mutmut-generated file, methods included.
    text = open(path, encoding="utf-8").read()
    lines = text.splitlines(True)
    out = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = (lines[node.lineno - 1:node.end_lineno], node)
    return out


def _is_message(value):
    return isinstance(value, str) and not _CODE.match(value)


class _Words(ast.NodeTransformer):
    # Drops what only a human reads: an OtaError's detail (every argument after the reason code),
    # the arguments of print(), and message text constants.
    def visit_Call(self, node):
        self.generic_visit(node)
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name == "OtaError":
            node.args = node.args[:1]
        elif name == "print":
            node.args, node.keywords = [], []
        return node

    def visit_Constant(self, node):
        return ast.Constant("message") if _is_message(node.value) else node


def _words_only(orig, mutant):
    import copy

    a, b = copy.deepcopy(orig), copy.deepcopy(mutant)
    a.name = b.name = ""  # x_f__mutmut_orig and x_f__mutmut_7
    return ast.dump(_Words().visit(a)) == ast.dump(_Words().visit(b))


def message_only(orig, mutant):
    # True when the two functions differ only in message text: constants where the original is text
    # for a human, an OtaError's detail, print()'s arguments.
    if _words_only(orig, mutant):
        return True
    a, b = list(ast.walk(orig)), list(ast.walk(mutant))
    if len(a) != len(b):
        return False
    changed = False
    for x, y in zip(a, b):
        if type(x) is not type(y):
            if isinstance(x, ast.Constant) and _is_message(x.value) and isinstance(y, ast.Constant):
                changed = True
                continue
            return False
        if isinstance(x, ast.Constant) and x.value != y.value:
            if not _is_message(x.value):
                return False
            changed = True
        elif isinstance(x, ast.Name) and x.id != y.id:
            return False
        elif isinstance(x, (ast.BinOp, ast.BoolOp, ast.UnaryOp)) and type(x.op) is not type(y.op):
            return False
        elif isinstance(x, ast.Compare) and [type(o) for o in x.ops] != [type(o) for o in y.ops]:
            return False
        elif isinstance(x, ast.Attribute) and x.attr != y.attr:
            return False
        elif isinstance(x, ast.keyword) and x.arg != y.arg:
            return False
        elif isinstance(x, ast.Call) and (len(x.args) != len(y.args) or len(x.keywords) != len(y.keywords)):
            return False
    return changed


_CAUGHT = ("killed", "timeout", "segfault")  # a mutant that hangs or crashes is caught


def _metas(stage):
    # {module: (meta path, the module's unmutated source as the stage copied it)}
    out = {}
    for meta in sorted(glob.glob(os.path.join(stage, "mutants", "src", "**", "*.py.meta"), recursive=True)):
        relative = os.path.relpath(meta[:-len(".meta")], os.path.join(stage, "mutants", "src"))
        out[relative[:-3].replace(os.sep, ".")] = (meta, os.path.join(stage, "src", relative))
    return out


def _codes(meta):
    return json.load(open(meta)).get("exit_code_by_key", {})


def _same_file(a, b):
    try:
        return open(a, "rb").read() == open(b, "rb").read()
    except OSError:
        return False


def again(base, root="."):
    # mutmut's names (or "module.*") to run again: see the module's docstring.
    names = []
    for module, (meta, source) in _metas(base).items():
        package, name = module.split(".", 1)
        current = os.path.join(root, "lib" if package == "ota" else "", package, name.replace(".", os.sep) + ".py")
        if not _same_file(source, current):
            names.append(module + ".*")
            continue
        names += sorted(n for n, code in _codes(meta).items()
                        if code is None or status_by_exit_code.get(code, "suspicious") not in _CAUGHT)
    # a module of lib/ota new since (the scope's other files are named one by one in mutate.toml)
    for path in sorted(glob.glob(os.path.join(root, "lib", "ota", "*.py"))):
        module = "ota." + os.path.basename(path)[:-3]
        if module != "ota.__init__" and module not in _metas(base):
            names.append(module + ".*")
    return names


def main(out_dir=".", base=None):
    rows = {}
    survivors = []
    earlier = _metas(base) if base else {}
    for module in set(earlier) - set(_metas(out_dir)):  # not run again (nothing alive): carry it over
        meta = earlier[module][0]
        mutated = os.path.relpath(meta[:-len(".meta")], os.path.join(base, "mutants"))  # src/ota/x.py
        for relative in (os.path.join("mutants", mutated + ".meta"), os.path.join("mutants", mutated), mutated):
            copy_to = os.path.join(out_dir, relative)
            os.makedirs(os.path.dirname(copy_to), exist_ok=True)
            shutil.copyfile(os.path.join(base, relative), copy_to)
    now = _metas(out_dir)  # every module of the earlier run is in this stage now
    for module, (meta, source) in sorted(now.items()):
        codes = _codes(meta)
        if module in earlier and _same_file(earlier[module][1], source):
            # this run's verdicts over the earlier run's, where this run checked the mutant again;
            # written into this run's records, so that a later MUTATE_AGAIN over this stage resumes
            # from everything known (a chain of runs, each stopped part-way, adds up)
            merged = _codes(earlier[module][0])
            merged.update({n: code for n, code in codes.items() if code is not None})
            codes = merged
            record = json.load(open(meta))
            record["exit_code_by_key"] = {n: merged.get(n) for n in record.get("exit_code_by_key", {})}
            with open(meta, "w") as f:
                json.dump(record, f)
        if all(code is None for code in codes.values()):  # a module MUTATE_ONLY left out
            continue
        defs = functions(meta[:-len(".meta")])  # the mutated file: every mutant's function beside the original
        row = rows.setdefault(module, {"mutants": 0, "checked": 0, "killed": 0, "survived": 0, "no tests": 0,
                                       "timeout": 0, "message": 0, "message_killed": 0})
        for name, code in codes.items():
            row["mutants"] += 1
            status = "not checked" if code is None else status_by_exit_code.get(code, "suspicious")
            mangled = name.rsplit(".", 1)[1]
            orig_name = mangled.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
            if status == "not checked":  # before the comparison: MUTATE_ONLY leaves most unchecked
                continue
            message = False
            if mangled in defs and orig_name in defs:
                message = message_only(defs[orig_name][1], defs[mangled][1])
            row["checked"] += 1
            row["message"] += message
            if status in _CAUGHT:
                row["killed"] += 1
                row["message_killed"] += message
                row["timeout"] += status != "killed"
            elif status == "no tests":
                row["no tests"] += 1
                survivors.append((name, status, message, defs, orig_name, mangled))
            else:
                row["survived"] += 1
                survivors.append((name, status, message, defs, orig_name, mangled))
    total = {k: sum(r[k] for r in rows.values()) for k in ("mutants", "checked", "killed", "survived",
                                                            "no tests", "timeout", "message", "message_killed")}
    print("%-22s %7s %7s %7s %8s %8s %6s %9s" % ("module", "mutants", "checked", "killed", "survived",
                                                  "no tests", "all %", "behav. %"))
    for module, r in sorted(rows.items()) + [("TOTAL", total)]:
        behaviour_checked = r["checked"] - r["message"]
        behaviour_killed = r["killed"] - r["message_killed"]
        print("%-22s %7d %7d %7d %8d %8d %6s %9s" % (
            module, r["mutants"], r["checked"], r["killed"], r["survived"], r["no tests"],
            "%.1f" % (100.0 * r["killed"] / r["checked"]) if r["checked"] else "-",
            "%.1f" % (100.0 * behaviour_killed / behaviour_checked) if behaviour_checked else "-"))
    with open(os.path.join(out_dir, "survivors.txt"), "w") as f:
        for name, status, message, defs, orig_name, mangled in survivors:
            if message:
                continue
            f.write("=== %s (%s)\n" % (name, status))
            if mangled in defs and orig_name in defs:
                f.writelines(difflib.unified_diff(defs[orig_name][0], defs[mangled][0], n=1))
            f.write("\n")
    print("behaviour survivors and untested mutants, as diffs: %s" % os.path.join(out_dir, "survivors.txt"))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--again"]:
        print(" ".join(again(args[1])))
    elif "--base" in args:
        at = args.index("--base")
        main(*(args[:at] + args[at + 2:]), base=args[at + 1])
    else:
        main(*args)
