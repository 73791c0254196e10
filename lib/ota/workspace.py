# The two blocks an update needs in one piece, taken early and lent to every update:
#
#   ws = Workspace(ota)   # at start-up: ota is the config's "ota" section
#   ws.buf                # bytearray(ota.chunk_size): received data, header lines, padding, read-back
#   ws.make_context()     # once Wi-Fi is up (the agent, after its first connect): the SSLContext
#   ws.tls_context        # the verified SSLContext with ota.ca_path's CA; None until made, or when it
#                         # could not be made
#   ws.problem            # why one of them is None (an OtaError or "MemoryError"), printed once
#
# Why early (docs/MEMORY.md, "A workspace from start-up"): the buffer (4 KiB) and the SSLContext
# (3 KB on the 64-bit simulator) are the update's only allocations that need one contiguous block.
# Made at update time, after days of MQTT traffic, they need a hole that size in a fragmented heap;
# on the simulator's fixed heap that was what decided whether an update fits (the SSLContext was the
# allocation that failed). Everything else an update allocates is small and fits the holes. Held for
# the device's life they cost their size once (MicroPython's advice for buffers: allocate them early,
# docs.micropython.org reference/constrained.html), and the update then needs less heap in all.
#
# Why the context only once Wi-Fi is up: an SSLContext seeds its random generator (mbedTLS CTR-DRBG)
# once, when it is made, from the chip's RNG, and on the ESP32-C3 that RNG gives only pseudo-random
# numbers between the app's start and the radio's (ESP-IDF, "Random Number Generation"; docs/CHIP.md
# §12). Every handshake of the context's life draws its secrets from that seed.
#
# A workspace never stops the agent: without a CA file (not provisioned yet) or without room, what is
# missing stays None and update.run makes it itself at update time, as before, with the same errors.
class Workspace:
    def __init__(self, ota):
        self.ca_path = ota["ca_path"]
        self.buf = self.tls_context = self.problem = None
        self._tried = False
        try:
            self.buf = bytearray(ota["chunk_size"])
        except MemoryError:
            self._missing("MemoryError")

    # Makes the context, once per boot: call it when the radio is on. Never raises.
    def make_context(self, https=None):
        if self._tried:
            return
        self._tried = True
        try:
            if https is None:
                from ota import https
            self.tls_context = https.context(self.ca_path)
        except MemoryError:
            self._missing("MemoryError")
        except Exception as e:  # OtaError tls_failed (no CA file yet, a bad one): the update reports it
            self._missing(e)

    def _missing(self, why):
        self.problem = why
        print("agent: update workspace incomplete (%s): the update makes its own" % why)

    # The buffer for an update of this chunk size, or None (update.run then allocates one).
    def buffer(self, chunk_size):
        buf = self.buf
        return buf if buf is not None and len(buf) == chunk_size else None
