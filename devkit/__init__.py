# The dev kit (CPython, host side, a checkout of the repository): what the demo, the tests and the
# benchmarks need and an operator does not. Synthetic firmware images (images), the simulated fleet
# on the real MicroPython binary (simfleet), `make demo` (demo) and `make sim` (simwatch), the test
# servers: a real mosquitto or amqtt broker (broker), nginx (nginx), our fault-injecting HTTPS dev
# server (devserver), a hostile HTTP server (hostileserver), a fault-injecting TCP proxy
# (faultproxy), and the fault matrix's table (faultmatrix). Nothing here runs on the device.
#
# Dependencies flow one way: host_tests -> devkit -> sim -> otactl -> ota (lib/ota). The kit imports
# the simulator, otactl and the device package; none of them imports the kit
# (host_tests/unit/test_layout.py).
