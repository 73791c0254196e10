# Host-side test and demo harness (CPython): a throwaway TLS CA (tls), a real nginx (nginx),
# our own fault-injecting HTTPS dev server (devserver). Nothing here runs on the device.
