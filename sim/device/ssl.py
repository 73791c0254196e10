# Simulated `ssl`: the port's own (micropython-lib's python-stdlib/ssl, frozen as ".frozen/ssl") with
# simssl's SSLContext, which adds what the chip does: no verified handshake before the clock is set,
# and, when sim.json says "tls_accounting": true, the TLS sessions counted against the simulated IDF
# heap (see simssl.py). Kept tiny: the port's module is frozen (no GC heap),
# this one is not, and the simulated devices' heap budget is measured (host_tests/sim/test_sim_heap.py).
from simport import port_module

port_module("ssl", [".frozen"], globals())  # the frozen one, under the same name
from simssl import SSLContext, wrap_socket  # noqa: E402,F401
del port_module
