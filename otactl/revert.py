"""Revert: send devices back to the firmware in their other slot, without a download.

    devices, skipped, start = revert_candidates("rollout.jsonl", fleet)
    results = revert(conn, devices, log_path="rollout.jsonl")   # {device: revert_outcome record}

The device side (lib/ota/jobrun.py) checks that the other slot holds an app image, set_boot()s it
and resets; the old firmware then passes its health gate again and reports "ok" with its version.
"""
import time

from . import devstate, values
from .messages import new_job_id, revert_message
from .tracking import Log, Tracker


def revert_candidates(log_path, fleet):
    """From a rollout log: the devices that took the new version (outcome ok, or triggered and now
    reporting it: late successes after a timeout). Returns (devices, skipped {id: why})."""
    records = Log.read(log_path)
    start = records[0]
    wanted = start["manifest"]["version"]
    mine = [r for r in records if r.get("rollout", start.get("job")) == start.get("job")]
    triggered = [r.get("device") for r in mine if r["event"] == "trigger"]
    outcomes = {}
    for r in mine:
        if r["event"] == "outcome":
            outcomes.setdefault(r.get("device"), r)  # the first outcome counts
    devices, skipped = [], {}
    for device in dict.fromkeys(triggered):
        if not isinstance(device, str) or devstate.id_problem(device):
            skipped[devstate.show(str(device))] = "bad_device_id"
            continue
        record = outcomes.get(device)
        if record is not None and record["outcome"] == "same_version":
            skipped[device] = "same_version"  # it ran the version before the rollout
            continue
        current = fleet.get(device)
        if current is None:
            skipped[device] = "no_state"
        elif current.version != wanted:
            skipped[device] = "runs_%s" % current.version
        elif not current.online:
            skipped[device] = "offline"
        else:
            devices.append(device)
    return devices, skipped, start


def revert(conn, devices, job=None, timeout=120.0, log_path=None, on_event=None, tracker=None,
           max_concurrent=None, sign_key=None, allow_downgrade=False):
    """Publishes {"type": "ota_revert", "id": job} to each device and waits for each outcome:
    ok (with the version it now runs) / failed (reason) / timeout. Returns {device: record}.
    A device refuses a revert to an older version (downgrade) unless the revert is signed with
    allow_downgrade, or its own policy allows downgrades."""
    max_concurrent = values.count("--max-concurrent", max_concurrent, allow_none=True)
    timeout = values.seconds("--timeout", timeout)
    job = job or new_job_id("revert")
    message, payload = revert_message(job, allow_downgrade=allow_downgrade)
    log = Log(log_path, rollout=job)
    emit = on_event or (lambda record: None)
    if tracker is None:
        tracker = Tracker(conn, job, timeout)
        tracker.start(10.0)
    else:
        tracker.job, tracker.timeout = job, timeout
    tracker.drain_snapshot()
    before = {d: (tracker.fleet.get(d).version if tracker.fleet.get(d) else None) for d in devices}
    emit(log.write("revert_start", durable=True, job=job, devices=list(devices), trigger=message))
    todo, results = list(devices), {}
    limit = max_concurrent or len(todo) or 1

    def log_batch(batch):  # fsynced before the batch is sent (decisionlog.py)
        records = [log.write("revert_trigger", device=device, job=job) for device in batch]
        log.sync()
        for record in records:
            emit(record)

    try:
        while todo or tracker.in_flight:
            batch, todo = tracker.launch(todo, limit, lambda d: payload if sign_key is None
                                         else revert_message(job, sign_key, d, allow_downgrade)[1],
                                         before_send=log_batch)
            settled = tracker.settled(None, tracker.wait_time(time.monotonic()))
            for device, (outcome, reason, detail) in settled:
                tracker.forget(device)
                current = tracker.fleet.get(device)
                record = log.write("revert_outcome", device=device, job=job, outcome=outcome, reason=reason,
                                   detail=detail, version_before=before.get(device),
                                   version=current.version if current else None)
                results[device] = record
                emit(record)
        counts = {}
        for record in results.values():
            counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
        emit(log.write("revert_done", job=job, outcomes=counts))
    finally:
        log.close()
    return results
