# The health gate: what the first boot after an update (or a revert) must prove before the new slot
# is marked valid, and how the old firmware learns, after a rollback, what happened.
#
# The bootloader boots a freshly set slot once in PENDING_VERIFY; any reset before
# Partition.mark_app_valid_cancel_rollback() makes it boot the previous slot (docs/CHIP.md §2). So:
#   new image boots -> classify() == "update" -> agent brings up Wi-Fi + MQTT -> confirm() runs the
#   self-test and marks the slot valid -> state "ok".  Not healthy within ota.health_timeout_s ->
#   roll_back(): the reason goes into the job record, then machine.reset().
#   old image boots again -> classify() == "rolled_back" -> state "rolled_back", reason from the record
#   ("boot_failed" if the new image died before it could write one, also after a double power cut that
#   otadata shows: the record says "downloading" but the bootloader ABORTED the new slot).
from ota.state import ticks_diff, ticks_ms

_ESP_ERR_NOT_FOUND = -261  # no otadata partition: the build has no rollback
_ESP_FAIL = 1  # running the factory app: nothing to confirm


# machine.reset_cause() at the old firmware's boot, after the new image's reset (docs/HARDWARE.md).
_CAUSES = {2: "reset itself before it confirmed (crashed: see its console)",
           3: "hung: the watchdog reset it before it confirmed", 1: "lost power before it confirmed"}


def classify(record, running_slot, slot_states=None, reset_cause=None):
    # record: Jobs.current (or None); slot_states: ota.otadata.read() (the agent reads it only for a
    # record still "downloading"; None = unknown); reset_cause: machine.reset_cause(), which names
    # what ended a new image that left no reason. Returns (kind, reason, detail), kind one of:
    #   normal       no job in flight (none, or its outcome was already reported)
    #   update       first boot of the job's new slot: the health gate must run
    #   rolled_back  the new slot was left (health gate failed, or it crashed) -> report
    #   interrupted  the device reset during the download; the boot slot never changed -> report
    #   no_rollback  the gate failed but the bootloader booted the new slot again (rollback disabled)
    if record is None:
        return "normal", None, None
    state = record.get("state")
    moved = running_slot != record.get("from_slot")
    if state == "downloading":
        # set_boot() happens inside update.run(); a power cut between it and the "rebooting" write
        # leaves "downloading" with the new slot running: still an update boot.
        if moved:
            return "update", None, None
        # Back on the old slot. A cut during the download, or a double cut: one after set_boot (before
        # "rebooting" was written), then one during the new image's first boot, which the bootloader
        # then ABORTED. Only if the target was not ABORTED already when the job started (to_otadata):
        # set_boot to the same slot rewrites the same seq, so an earlier job's ABORTED entry looks
        # identical. Unknown (no to_otadata: an older record) stays "interrupted".
        target = record.get("to_slot")
        before = record.get("to_otadata", "ABORTED")
        if (slot_states or {}).get(target) == "ABORTED" and before != "ABORTED":
            return "rolled_back", "boot_failed", "%s ABORTED: the new image booted, did not confirm" % target
        return "interrupted", "interrupted", "reset during download"
    if state == "rebooting":
        if moved:
            return "update", None, None
        if record.get("reason"):
            return "rolled_back", record["reason"], record.get("detail")
        # The new image reset before it could say why: what reset it is all we know.
        why = _CAUSES.get(reset_cause, "reset before it confirmed (reset cause %s)" % reset_cause)
        return "rolled_back", "boot_failed", "the new image " + why
    if state == "rolling_back":
        if moved:
            return "no_rollback", record.get("reason"), "still on %s: no rollback" % running_slot
        return "rolled_back", record.get("reason"), record.get("detail")
    return "normal", None, None


class Gate:
    # The deadline of the health gate, counted from boot (the agent creates it first thing).
    def __init__(self, timeout_s):
        self.started = ticks_ms()
        self.timeout_ms = int(timeout_s * 1000)

    def remaining_ms(self):
        return max(0, self.timeout_ms - ticks_diff(ticks_ms(), self.started))

    def expired(self):
        return self.remaining_ms() == 0


# Runs the self-test, then marks the running slot valid. Returns (state, reason, detail):
#   ("ok", None, None); ("ok", "rollback_unsupported", ...) when the build has no rollback (the image
#   runs, and stays, but nothing could have rolled it back); ("failed", "selftest_failed", detail);
#   ("failed", "mark_valid_failed", detail) for any other ESP-IDF error. Never raises.
def confirm(selftest_run, cfg, esp32):
    try:
        ok, why = selftest_run(cfg)
    except Exception as e:  # a self-test that crashes is a failed self-test
        ok, why = False, "crashed: %r" % e
    if not ok:
        return "failed", "selftest_failed", why
    try:
        esp32.Partition.mark_app_valid_cancel_rollback()
    except OSError as e:
        if e.errno in (_ESP_ERR_NOT_FOUND, _ESP_FAIL):
            return "ok", "rollback_unsupported", str(e)
        return "failed", "mark_valid_failed", str(e)
    return "ok", None, None


# Records why the new image is not healthy, then resets: the bootloader boots the previous slot.
# Does not return on a device (machine.reset() ends the program).
def roll_back(jobs, machine, reason, detail):
    print("health: rolling back:", reason, detail or "")
    jobs.update(state="rolling_back", reason=reason, detail=detail)
    machine.reset()
