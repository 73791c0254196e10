# The one conftest of host_tests/: what every test group (unit/, sim/, e2e/, faults/) shares.
#
# Layout: the group folders hold only test_*.py files; the CPython helpers they import (paths, fakes,
# fleet_helpers, replica_images) sit here beside this file, which pytest puts on sys.path (rootdir
# conftest, "prepend" import mode; pyproject's pythonpath names the folder too); the scripts that run ON
# MicroPython are in drivers/, which is never on sys.path. The fixtures import what they use when
# they run: loading this file imports nothing of the project (a test that checks what a module
# imports sees only what that module brought in).
import json
import sys
import types

import pytest


# The device package's modules say `from micropython import const`: MicroPython's parser folds the bare
# name `const` itself, and the import is there so that the same file runs on CPython (docs.micropython.org,
# library/micropython.html). Under pytest they get this stub, so they import as on the device. lib/ota
# keeps its own `except ImportError` fallback all the same: otactl imports ota.trigger, ota.image and
# ota.image_verify into the operator's CPython, which is not a test and has no stub, and the device
# package is the bottom of the dependency order, so it cannot ask a tool above it to install one
# (unit/test_micropython_stub.py checks that both ways import).
if "micropython" not in sys.modules:
    _stub = types.ModuleType("micropython")
    _stub.const = lambda value: value
    sys.modules["micropython"] = _stub


@pytest.fixture
def loaders(monkeypatch):
    # Every ota.inflate.Loader that update.run makes, to read its counters afterwards (the compressed
    # and delta mutant tests).
    from ota import inflate

    made = []

    class Recorded(inflate.Loader):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            made.append(self)

    monkeypatch.setattr(inflate, "Loader", Recorded)
    return made


@pytest.fixture
def broker(tmp_path):
    # A real mosquitto (amqtt where it is missing) on a free loopback port, for one test.
    from fleet_helpers import broker_module

    with broker_module.Broker(str(tmp_path / "broker")) as b:
        yield b


@pytest.fixture
def manifest_file(tmp_path):
    # The release manifest `otactl release` writes, for fleet_helpers.MANIFEST.
    from fleet_helpers import MANIFEST

    path = tmp_path / "firmware-v1.0.1.json"
    path.write_text(json.dumps(MANIFEST))
    return str(path)


@pytest.fixture(scope="session")
def tls_site(tmp_path_factory):
    # tls_site(name, {file: bytes}) -> (root, pki, www): a fresh folder with a test CA and server
    # certificate (pki) and a web root (www) holding the files, for a dev server or nginx to serve.
    from devkit.tls import make_pki

    def make(name, files=None):
        root = tmp_path_factory.mktemp(name)
        www = root / "www"
        www.mkdir()
        for file, blob in (files or {}).items():
            (www / file).write_bytes(blob)
        return root, make_pki(str(root / "pki")), www

    return make


@pytest.fixture
def fleet(broker):
    # fleet([(id, version, Behavior or None), ...]) -> a started LightFleet on the test's broker.
    from fleet_helpers import FAST
    from sim.lightdevice import Behavior, LightFleet

    made = []

    def make(devices):
        light = LightFleet(broker.host, broker.port, per_connection=8)
        for device_id, version, behavior in devices:
            light.add(device_id, version, behavior or Behavior(**FAST))
        made.append(light)
        return light.start()

    yield make
    for light in made:
        light.stop()
        assert light.scheduler.errors == []


@pytest.fixture
def conn(broker):
    # conn() -> a new otactl MQTT connection to the test's broker, closed after the test.
    from otactl import mqtt

    connections = []

    def make():
        c = mqtt.connect(None, host=broker.host, port=broker.port)
        connections.append(c)
        return c

    yield make
    for c in connections:
        c.close()


@pytest.fixture(autouse=True)
def _catalogued_messages(request):
    # Unit tests only: every message our code makes during the test must be in host_tests/messages.txt
    # (message_catalogue.py says why; `make messages` rewrites the file after a deliberate change).
    if request.node.path.parent.name != "unit":
        yield
        return
    from message_catalogue import Watch

    watch = Watch()
    watch.start()
    try:
        yield
    finally:
        unknown = watch.finish()
    if unknown:
        pytest.fail("message_not_catalogued: not in host_tests/messages.txt (a new or changed message: "
                    "`make messages` rewrites the file; review its diff): %s" % "; ".join(map(repr, unknown)),
                    pytrace=False)


def pytest_collection_finish(session):
    # The device package calls gc.collect() where MicroPython needs it (before a TLS handshake, per
    # connection); on CPython each call walks every object pytest, hypothesis and the collected test
    # modules made, a tenth of a second each. Freezing what exists after collection leaves those out
    # of every later collection; what the tests make afterwards is collected as before.
    import gc

    gc.collect()
    gc.freeze()
