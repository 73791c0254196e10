# The simulator's heap tax, which devkit/simfleet.py's FLEET_HEAP is sized from: the sim's own
# modules before main.py, and what importing the whole device package costs. If either grows a lot,
# FLEET_HEAP's reasoning (and the benchmarks' heap numbers) must be revisited.
import re

from devkit import simfleet
from sim.runner import Device

# The room simboot holds for the frozen modules' ROMFS image is flash on the board: not the sim's tax.
PROBE = b"""
import gc, simdev
gc.collect(); print("start", gc.mem_alloc() - simdev.rom_reserved, gc.mem_free())
from ota import agent, update, https, image, writer, heap, selftest, health, jobs, state, trigger
import umqtt.simple
gc.collect(); print("loaded", gc.mem_alloc() - simdev.rom_reserved, gc.mem_free())
"""


def test_heap_tax_of_the_simulator_and_the_device_code(tmp_path):
    device = Device(str(tmp_path / "dev"), heapsize=simfleet.FLEET_HEAP)
    device.create(simfleet.firmware("1.0.0"), fs_files={"main.py": PROBE})
    assert device.run(timeout=30) == "exit", device.console()
    numbers = dict((m[0], (int(m[1]), int(m[2])))
                   for m in re.findall(r"^(start|loaded) (\d+) (\d+)$", device.console(), re.M))
    sim_alloc, _ = numbers["start"]
    loaded_alloc, loaded_free = numbers["loaded"]
    assert sim_alloc < 40 * 1024, "the sim's own modules take %d bytes of the device heap" % sim_alloc
    assert loaded_alloc - sim_alloc < 160 * 1024, "the device code takes %d bytes" % (loaded_alloc - sim_alloc)
    # What is left for run-time data must stay at least a C3's starting heap in 64-bit objects.
    assert loaded_free > 2 * 48 * 1024, loaded_free
