# Simulated `socket` of the ESP32 port: the Unix port's built-in, plus the two constants the ESP32
# port's modsocket has had since v1.23.0 and the Unix port lacks: IPPROTO_TCP and TCP_NODELAY
# (MP v1.28.0 ports/esp32/modsocket.c: socket_setsockopt's "level: IPPROTO_TCP" case hands
# TCP_NODELAY to lwip_setsockopt). lwIP's values (6, 0x01) are Linux's too, so the Unix port's
# setsockopt, which passes level and option through to the kernel, does the same thing here.
from simport import port_module

port_module("socket", [], globals())  # the port's built-in, under the same name
del port_module

IPPROTO_TCP = 6
TCP_NODELAY = 1
