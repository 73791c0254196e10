// OTA_SWITCH_C3: ESP32_GENERIC_C3's settings (ports/esp32/boards/ESP32_GENERIC_C3/mpconfigboard.h),
// a generic ESP32-C3 module with 4 MiB flash; only the name differs.

#define MICROPY_HW_BOARD_NAME               "ESP32C3 OTA switch"
#define MICROPY_HW_MCU_NAME                 "ESP32C3"

#define MICROPY_HW_ENABLE_SDCARD            (0)

// Enable UART REPL for modules that have an external USB-UART and don't use native USB.
#define MICROPY_HW_ENABLE_UART_REPL         (1)
