# The application's self-test, run by the health gate (health.py) on the first boot of a new image,
# before the image is marked valid. A release whose self-test fails is rolled back by the bootloader.
# Kept in its own module on purpose: the simulator's "bad release" replaces exactly this file.
#
# run(cfg) -> (True, None) or (False, "detail"). Never raises: a self-test that crashes is a failure.
import gc

# The modules a working release must be able to import: the whole OTA data path, so that a release
# that could not update itself again is never confirmed.
_MODULES = ("ota.config", "ota.trigger", "ota.intake", "ota.state", "ota.jobs", "ota.update", "ota.fetch",
            "ota.https", "ota.image", "ota.image_verify", "ota.compat", "ota.writer", "ota.version")
_HEAP_FLOOR = 32768  # bytes of GC heap left after imports; the update needs its 4 KiB+ buffers on top


def run(cfg=None):
    for name in _MODULES:
        try:
            __import__(name)
        except Exception as e:  # ImportError, SyntaxError, anything a broken module raises
            return False, "import %s: %s" % (name, e)
    # The config is not checked here: this image's validator ran on config.json at boot
    # (agent.load_config), and an update boot that had to set it aside never reaches the self-test
    # (agent._boot rolls it back at once).
    gc.collect()
    mem_free = getattr(gc, "mem_free", None)  # MicroPython only
    floor = _HEAP_FLOOR
    if cfg is not None:
        floor = cfg.get("ota", {}).get("selftest_min_heap", floor)
    if mem_free is not None and mem_free() < floor:
        return False, "heap %d < %d" % (mem_free(), floor)
    return True, None
