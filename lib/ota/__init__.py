# OTA updates for MicroPython on the ESP32-C3: one module per stage of the data path (docs/DESIGN.md).
