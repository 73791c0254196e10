"""Stand-ins for third-party ESP32-C3 app images that the device must refuse (issue 10).

No network here except package registries, and no PyPI package ships an ESP32-C3 MicroPython or
Arduino app binary (the one candidate, esp32-micropython 0.2.6, is a 20 KB wheel of Python code), so
these are REPLICAS built with otactl.firmware_image, not the real files. What is faithful is every
field a device or the inspector reads before writing a byte: the image header (magic, DIO 80 MHz
4 MB, chip id 5, chip revision range) and the esp_app_desc_t (version, project_name, idf_ver,
secure_version), and the length. Segment contents are pseudo-random filler; the entry point and the
build time are placeholders.
"""
from devkit import images

STOCK_C3_SIZE = 1_713_728  # micropython.bin of ESP32_GENERIC_C3 v1.24.1 (docs/CHIP.md §3)


def stock_micropython_c3():
    """Replica of the official MicroPython v1.24.1 ESP32_GENERIC_C3 app (micropython.bin): built with
    ESP-IDF v5.2.2; ports/esp32/boards/sdkconfig.base sets CONFIG_APP_EXCLUDE_PROJECT_VER_VAR and
    CONFIG_APP_EXCLUDE_PROJECT_NAME_VAR, so ESP-IDF's esp_app_desc.c leaves version and project_name
    empty; chip revision v0.3..v1.99 as every MicroPython C3 build. No `ota` package in it: on a board
    its main.py fails with ImportError and the device is off the fleet."""
    return images.build_image("", files=[], size=STOCK_C3_SIZE, project_name="", idf_ver="v5.2.2",
                          date="Nov 29 2024", min_rev=3, max_rev=199, seed=124)


def arduino_c3():
    """Replica of an Arduino-ESP32 2.0.x C3 sketch (ESP-IDF v4.4.7, built by arduino-lib-builder):
    its descriptor's version is the IDF's `esp-idf: v4.4.7 38eeba213a` and project_name
    `arduino-lib-builder` (docs/CHIP.md §3: every Arduino-ESP32 2.x app says so)."""
    return images.build_image("esp-idf: v4.4.7 38eeba213a", files=[], size=262_144,
                          project_name="arduino-lib-builder", idf_ver="v4.4.7-dirty",
                          date="Mar  5 2024", min_rev=3, max_rev=199, seed=447)
