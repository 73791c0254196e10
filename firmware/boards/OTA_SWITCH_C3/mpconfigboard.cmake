# OTA_SWITCH_C3: MicroPython's ESP32_GENERIC_C3 board plus our flash layout, our frozen code and a real
# version in the app descriptor. Built out of tree: make -C $MICROPYTHON_DIR/ports/esp32
# BOARD_DIR=<this dir> (firmware/build.sh does it). ESP32_GENERIC_C3/mpconfigboard.cmake is the base.
#
# Relative SDKCONFIG_DEFAULTS entries resolve against ports/esp32 (the port's CMakeLists.txt reads
# them from there), so the stock fragments are named as the stock board names them and ours by
# absolute path. CONFIG_PARTITION_TABLE_CUSTOM_FILENAME also resolves against the project dir
# (ports/esp32, ESP-IDF partition_table/project_include.cmake) unless absolute, so the fragment
# generated below gives the absolute path of the repository's partitions.csv.
set(IDF_TARGET esp32c3)

get_filename_component(OTA_REPO_DIR ${MICROPY_BOARD_DIR}/../../.. ABSOLUTE)

# The version that goes into esp_app_desc_t.version (at most 31 characters): from the environment
# (firmware/build.sh exports it from `make firmware VERSION=...`), else a development marker.
if(DEFINED ENV{OTA_FIRMWARE_VERSION} AND NOT "$ENV{OTA_FIRMWARE_VERSION}" STREQUAL "")
    set(OTA_FIRMWARE_VERSION "$ENV{OTA_FIRMWARE_VERSION}")
else()
    set(OTA_FIRMWARE_VERSION "0.0.0-dev")
endif()

# Generated at configure time. sdkconfig values already in build/sdkconfig win over defaults, so a new
# version needs a fresh sdkconfig: build.sh deletes it (and CMakeCache.txt) before every build.
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.ota
    "CONFIG_PARTITION_TABLE_CUSTOM=y\n"
    "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${OTA_REPO_DIR}/partitions.csv\"\n"
    "CONFIG_APP_PROJECT_VER_FROM_CONFIG=y\n"
    "CONFIG_APP_PROJECT_VER=\"${OTA_FIRMWARE_VERSION}\"\n"
)

set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${SDKCONFIG_IDF_VERSION_SPECIFIC}
    boards/sdkconfig.ble
    boards/ESP32_GENERIC_C3/sdkconfig.c3usb
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.ota
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
