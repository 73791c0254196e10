"""Dependencies flow one way: tests -> devkit -> sim -> otactl -> ota (lib/ota). Nothing imports
upward, so an operator installs otactl without the kit, a reader of lib/ota never meets a test
fixture, and a change to the simulator cannot break the product.

Two checks: every otactl and lib/ota module imported in a fresh interpreter leaves no module of the
kit, the simulator or the tests in sys.modules (what actually runs, lazy imports of a command's
handler included, since each handler module is imported); and every import statement of each
package, read with ast (function-level ones too), names only packages below it.
"""
import ast
import os
import subprocess
import sys

import pytest

from paths import LIB, ROOT

# package -> the repository's packages it may import (besides itself and the standard library)
ALLOWED = {
    "ota": set(),
    "otactl": {"ota"},
    "sim": {"otactl", "ota"},
    "devkit": {"sim", "otactl", "ota"},
}
OURS = {"ota", "otactl", "sim", "devkit", "host_tests", "harness", "bench"}
# sim/device/ is the simulated chip's firmware side: run by MicroPython with sim/device on sys.path,
# its modules import each other by bare name (simflash, simdev, ...) and the board's modules.
SIM_DEVICE_NAMES = {name[:-3] for name in os.listdir(os.path.join(ROOT, "sim", "device")) if name.endswith(".py")}
# Test helpers imported by bare name from host_tests/ (on sys.path under pytest).
TEST_HELPERS = {name[:-3] for _, _, names in os.walk(os.path.join(ROOT, "host_tests")) for name in names
                if name.endswith(".py") and name != "__init__.py"}


def _package_dir(package):
    return os.path.join(LIB, "ota") if package == "ota" else os.path.join(ROOT, package)


def _modules(package):
    base = _package_dir(package)
    for directory, subdirs, names in os.walk(base):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def _imported_tops(path):
    """(line, top-level package name) of every absolute import in the file, at any depth."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value.split(".")[0]


def _violations(package):
    found = []
    for path in _modules(package):
        rel = os.path.relpath(path, ROOT)
        for line, top in _imported_tops(path):
            if top == package or top not in OURS | TEST_HELPERS:
                continue
            if package == "sim" and top in SIM_DEVICE_NAMES:
                continue
            if top in ALLOWED[package]:
                continue
            found.append("%s:%d imports %s" % (rel, line, top))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_ones_below_it(package):
    assert _violations(package) == []


def test_the_ast_walk_sees_an_upward_import(tmp_path, monkeypatch):
    # The checker itself must be able to fail: a module of otactl that imports the kit inside a
    # function (how demo/sim were reached before) is found.
    fake = tmp_path / "otactl"
    fake.mkdir()
    (fake / "bad.py").write_text("import os\n\ndef f():\n    from devkit import simfleet\n"
                                 "    import importlib\n    importlib.import_module('sim.runner')\n")
    monkeypatch.setattr(sys.modules[__name__], "_package_dir", lambda package: str(fake))
    assert [v.split(" imports ")[1] for v in _violations("otactl")] == ["devkit", "sim"]


def _all_module_names(package):
    base = _package_dir(package)
    names = []
    for path in _modules(package):
        rel = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
        if rel.endswith("__main__"):
            continue  # `python -m otactl` runs the CLI: importing it would run a command
        names.append(package if rel == "__init__" else package + "." + rel.replace(".__init__", ""))
    return names


# The board's own modules: device code that needs them cannot be imported by CPython without the
# simulator's or the tests' fakes, which this check must not bring in.
BOARD_MODULES = ["esp32", "machine", "network", "ntptime", "micropython", "umqtt"]

_PROBE = r"""
import importlib, json, sys
opened = []
# every file the imports open (a module loaded by path, under another name, leaves no other trace)
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and args
                 and isinstance(args[0], (str, bytes)) else None)
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/lib"]
board = set(json.loads(sys.argv[3]))
skipped = []
for name in json.loads(sys.argv[2]):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in board:
            raise
        skipped.append(name)
files = sorted(set(opened) | {getattr(m, "__file__", None) or "" for m in list(sys.modules.values())})
print(json.dumps({"loaded": sorted(sys.modules), "skipped": skipped, "files": files}))
"""


@pytest.mark.parametrize("package", ["otactl", "ota"])
def test_importing_every_module_loads_nothing_above_it(package):
    import json

    names = _all_module_names(package)
    assert len(names) > 10, names  # the walk found the package
    # -I: a fresh interpreter that ignores PYTHONPATH and the user's site (the editable install of
    # this checkout puts nothing above otactl on the path either way).
    out = subprocess.run([sys.executable, "-I", "-c", _PROBE, ROOT, json.dumps(names), json.dumps(BOARD_MODULES)],
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    loaded = result["loaded"]
    above = {"harness", "devkit", "sim", "host_tests", "bench"} | TEST_HELPERS
    if package == "ota":
        above |= {"otactl"}
    else:
        assert result["skipped"] == []  # every otactl module imports on a plain CPython
    # ota: the modules that need the board (agent, writer, ...) are left out here; the ast walk
    # above covers them, and most of the package still imports (the host's share of it).
    assert len(result["skipped"]) < len(names) / 2, result["skipped"]
    assert set(names) - set(result["skipped"]) <= set(loaded)
    assert sorted(m for m in loaded if m.split(".")[0] in above) == []
    # ... and no file of theirs opened, e.g. loaded by path under another name (otactl once loaded
    # the simulator's sim/device/simpayload.py that way)
    folders = [os.path.join(ROOT, d) + os.sep for d in ("harness", "devkit", "sim", "host_tests", "bench")]
    if package == "ota":
        folders.append(os.path.join(ROOT, "otactl") + os.sep)
    assert [f for f in result["files"] if any(f.startswith(d) for d in folders)] == []
