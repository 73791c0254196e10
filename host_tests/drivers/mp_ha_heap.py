# MicroPython driver (run by test_ha_heap.py with .venv/bin/micropython): what Home Assistant's entity
# (lib/ota/ha.py) and the telemetry (lib/ota/telemetry.py) cost the GC heap, and whether the metered
# data path still allocates nothing per 4 KiB chunk.
#
#   micropython mp_ha_heap.py LIBDIR heap                     -> one line of byte counts
#   micropython mp_ha_heap.py LIBDIR alloc IMAGE SLOTFILE     -> mp_alloc.py's "update" mode, metered
import gc
import sys

import micropython

sys.path.insert(0, sys.argv[1])
MODE = sys.argv[2]


def allocated(fn):
    # GC bytes allocated while fn() runs (garbage included): a payload's transient cost.
    gc.collect()
    before = micropython.mem_total()
    fn()
    return micropython.mem_total() - before


def kept(make):
    # GC bytes still held after make() (the object it returns alive): a persistent cost.
    gc.collect()
    before = gc.mem_alloc()
    obj = make()
    gc.collect()
    return gc.mem_alloc() - before, obj


if MODE == "heap":
    from ota import config, ha, state, telemetry  # imported first: bytecode is flash on the board

    cfg = config.merge({"ha": {"discovery": True}})
    cmd, st = "/switch/cmd/a0b1c2d3e4f5", "/switch/state/a0b1c2d3e4f5"
    ha_obj, h = kept(lambda: ha.HomeAssistant(cfg["ha"], "a0b1c2d3e4f5", "1.0.0", cmd, st))
    announcement = (b'{"type":"ota_trigger","url":"https://fw.example.com/releases/firmware-v1.0.1.bin",'
                    b'"sha256":"' + b"ab" * 32 + b'","size":1713728,"version":"1.0.1","id":"v1.0.1-1a2b3c4d",'
                    b'"release_url":"https://fw.example.com/notes/1.0.1","summary":"Relay debounce fixed"}')
    take = allocated(lambda: h.take("/switch/release", announcement))
    release_kept, _ = kept(lambda: None)
    disc_len = len(h.discovery())
    disc = allocated(h.discovery)
    ent_len = len(h.entity("downloading", 42))
    ent = allocated(lambda: h.entity("downloading", 42))
    meter_kept, meter = kept(lambda: telemetry.Meter("1.0.1"))
    fields = allocated(meter.fields)
    reporter = state.Reporter("a0b1c2d3e4f5", "1.0.0", "ota_0")
    record = telemetry.record(meter.fields())
    plain = allocated(lambda: reporter.message("ok", job="v1.0.1-1a2b3c4d"))
    with_t = allocated(lambda: reporter.message("ok", job="v1.0.1-1a2b3c4d", t=record))
    print("heap ha_object=%d announcement_take=%d discovery=%d discovery_len=%d entity=%d entity_len=%d "
          "meter=%d meter_fields=%d state_plain=%d state_with_t=%d" % (
              ha_obj, take, disc, disc_len, ent, ent_len, meter_kept, fields, plain, with_t))
else:
    from ota import telemetry, update

    _run = update.run

    def metered(url, https=None, esp32=None, **kwargs):
        # commands.py's wrapping: the https module and the target slot, timed from outside.
        meter = telemetry.Meter("1.2.0", esp32, None)
        target = esp32.Partition(esp32.Partition.RUNNING).get_next_update()
        return _run(url, https=meter.https(https), esp32=esp32, target=meter.partition(target), **kwargs)

    update.run = metered
    sys.argv[:] = [sys.argv[0], sys.argv[1], sys.argv[3], sys.argv[4], "update"]  # mp_alloc.py's arguments
    with open(sys.argv[1] + "/../host_tests/drivers/mp_alloc.py") as f:
        exec(f.read())
