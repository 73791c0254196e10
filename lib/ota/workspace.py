# The two blocks an update needs in one piece, taken once at start-up and lent to every update:
#
#   ws = Workspace(ota)   # ota: the config's "ota" section; https: ota.https (tests pass a fake)
#   ws.buf                # bytearray(ota.chunk_size): received data, header lines, padding, read-back
#   ws.tls_context        # the verified SSLContext with ota.ca_path's CA; None when it could not be made
#   ws.problem            # why not (an OtaError or "MemoryError"), printed once; None when both are there
#
# Why at start-up (docs/MEMORY.md, "A workspace from start-up"): the buffer (4 KiB) and the SSLContext
# (3 KB on the 64-bit simulator) are the update's only allocations that need one contiguous block.
# Made at update time, after days of MQTT traffic, they need a hole that size in a fragmented heap;
# on the simulator's fixed heap that was what decided whether an update fits (the SSLContext was the
# allocation that failed). Everything else an update allocates is small and fits the holes. Held for
# the device's life they cost their size once (MicroPython's advice for buffers: allocate them early,
# docs.micropython.org reference/constrained.html), and the update then needs less heap in all.
#
# A workspace never stops the agent: without a CA file (not provisioned yet) or without room, what is
# missing stays None and update.run makes it itself at update time, as before, with the same errors.
class Workspace:
    def __init__(self, ota, https=None):
        self.buf = self.tls_context = self.problem = None
        try:
            # The context first: the CA file's bytes are garbage once it is made, and they are best
            # freed below the buffer rather than left as a hole above it.
            if https is None:
                from ota import https
            self.tls_context = https.context(ota["ca_path"])
        except MemoryError:
            self.problem = "MemoryError"
        except Exception as e:  # OtaError tls_failed (no CA file yet, a bad one): the update reports it
            self.problem = e
        try:
            self.buf = bytearray(ota["chunk_size"])
        except MemoryError:
            self.problem = "MemoryError"
        if self.problem is not None:
            print("agent: update workspace incomplete (%s): the update makes its own" % self.problem)

    # The buffer for an update of this chunk size, or None (update.run then allocates one).
    def buffer(self, chunk_size):
        buf = self.buf
        return buf if buf is not None and len(buf) == chunk_size else None
