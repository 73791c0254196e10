# The simulated modules that stand in for a port module of the same name (socket.py, time.py, ssl.py)
# take the port's own first: port_module imports it while they are being imported, with sys.path
# narrowed to `path` (empty: the built-ins only; [".frozen"]: the frozen ones), copies its public names
# into the simulated module's globals and returns it.
import sys


def port_module(name, path, into):
    me = sys.modules.pop(name)  # the simulated module: import the port's under the same name
    saved = sys.path[:]
    sys.path[:] = path
    try:
        port = __import__(name)
    finally:
        sys.path[:] = saved
        sys.modules[name] = me
    for key in dir(port):
        if not key.startswith("__"):
            into[key] = getattr(port, key)
    return port
