"""The staged rollout engine (the CLI is otactl/cmd_rollout.py), and revert.

    engine = Rollout(conn, manifest, Options(stages=(0.1, 0.5, 1.0), max_concurrent=10),
                     log_path="rollout.jsonl")
    summary = engine.run()         # or Rollout.resume(conn, "rollout.jsonl").run()

conn is an otactl.mqtt.Connection (anything with subscribe, sync, publish_nowait and on_message).

Rules. Targets: from the retained states, the online devices below the manifest's version (and below
--only-below), not in the middle of another job, in a fixed pseudo-random order (hash of job and id,
so a stage is a sample of the fleet, not the first ids). Stages are cumulative fractions of the
targets. At most max_concurrent devices have an unfinished trigger (per-device topic, QoS 1). A
device's outcome comes from its state messages carrying the job id (otactl/tracking.py: ok,
same_version, wrong_version, failed, rolled_back, timeout). A stage failure rate (failures / stage size)
above abort_failure_rate aborts at once: no new triggers, the devices in flight are still tracked to
their outcome. At the end of a stage, success rate (successes / stage size) >= success_threshold
advances, else abort.

The log (otactl/decisionlog.py: JSON lines, each record carrying the rollout's job id, crash-safe)
holds every decision; see LOG_EVENTS. A batch's trigger records are fsynced before its triggers are
sent. resume() reads it, checked against the manifest it is given (never trusting the URL, targets
or job of the file alone): devices with an outcome are never triggered again, devices with a trigger
record but no outcome are watched (never re-sent, even if the power went before the send), each
device's first outcome of this rollout counts once, the stages go on.
"""
import hashlib
import math
import os
import time

from . import devstate, values
from ota.errors import OtaError
from .fleet import compare_versions
from .messages import encode, load_sign_key, new_job_id, trigger_message  # noqa: F401  (re-exported)
from .revert import revert, revert_candidates  # noqa: F401  (re-exported for the CLI)
from .tracking import Log, Tracker

LOG_EVENTS = ("start", "resume", "trigger", "outcome", "stage", "abort", "interrupted", "done",
              "revert_start", "revert_trigger", "revert_outcome", "revert_done")
SUCCESS = ("ok", "same_version")
FAILURE = ("failed", "rolled_back", "timeout", "wrong_version")


class Options:
    def __init__(self, stages=(0.1, 0.5, 1.0), max_concurrent=10, device_timeout=600.0,
                 success_threshold=0.9, abort_failure_rate=0.2, only_below=None):
        try:
            stages = tuple(float(s) for s in stages)
        except (TypeError, ValueError):
            raise OtaError("bad_stages", "stages are fractions like 0.1,0.5,1")
        if (not stages or any(not 0 < s <= 1 for s in stages) or list(stages) != sorted(set(stages))
                or len(stages) > 100):
            raise OtaError("bad_stages", "stages are increasing cumulative fractions in (0, 1], "
                           "e.g. 0.1,0.5,1: got %s" % ",".join("%g" % s for s in stages))
        max_concurrent = values.count("--max-concurrent", max_concurrent)
        device_timeout = values.seconds("--device-timeout", device_timeout)
        success_threshold = values.fraction("--success-threshold", success_threshold)
        abort_failure_rate = values.fraction("--abort-failure-rate", abort_failure_rate)
        self.stages = stages
        self.max_concurrent = int(max_concurrent)
        self.device_timeout = float(device_timeout)
        self.success_threshold = float(success_threshold)
        self.abort_failure_rate = float(abort_failure_rate)
        self.only_below = only_below

    def as_dict(self):
        return dict(self.__dict__, stages=list(self.stages))

    @classmethod
    def from_dict(cls, d):
        # Names checked here, not by Python's call: its TypeError's words name the function (and,
        # under mutation testing, a mangled one), and they reach the operator as bad_log's detail.
        unknown = sorted(str(k) for k in d if k not in _OPTION_NAMES)
        if unknown:
            raise ValueError("unknown option %s" % ", ".join(unknown))
        return cls(**d)


_OPTION_NAMES = ("stages", "max_concurrent", "device_timeout", "success_threshold", "abort_failure_rate",
                 "only_below")


def stage_bounds(count, fractions):
    """Cumulative fractions -> [(start, end)] index ranges over `count` targets (empty ones dropped)."""
    bounds, start = [], 0
    for fraction in fractions:
        end = min(count, max(start, math.ceil(round(fraction * count, 9))))
        if end > start:
            bounds.append((start, end))
        start = end
    return bounds


def _order(job, ids):
    return sorted(ids, key=lambda d: hashlib.sha256(("%s|%s" % (job, d)).encode()).digest())


class Rollout:
    def __init__(self, conn, manifest, options=None, log_path=None, job=None, on_event=None,
                 snapshot_timeout=10.0, sign_key=None, _resuming=False):
        if log_path and not _resuming and os.path.exists(log_path) and os.path.getsize(log_path):
            raise OtaError("log_exists", "%s already holds a rollout: continue it with --resume, or "
                           "give another --log" % log_path)
        self.conn = conn
        self.manifest = manifest
        self.options = options or Options()
        self.job = job or new_job_id("v%s" % manifest["version"].lstrip("vV"))
        self.log = Log(log_path, rollout=self.job)
        self.on_event = on_event or (lambda record: None)
        self.snapshot_timeout = snapshot_timeout
        self.sign_key = sign_key
        self.message, self.payload = trigger_message(manifest["url"], manifest["sha256"], manifest["size"],
                                                     manifest["version"], self.job)
        self.targets = None
        self.skipped = {}
        self.outcomes = {}  # device -> record
        self.triggered = set()
        self.decided_stages = set()  # advanced or aborted: a resume skips both
        self.advanced_stages = set()
        self.stage_counts = {}  # stage -> {"ok": n, "failed": n}
        self.resumed = None
        self.aborted = None
        self.started = time.monotonic()
        self.tracker = None

    @classmethod
    def resume(cls, conn, log_path, manifest, on_event=None, snapshot_timeout=10.0, sign_key=None):
        """Continue the rollout in `log_path`. `manifest` is required and must be the log's: the file
        alone never decides what is signed and sent, or to whom. Raises OtaError bad_log,
        manifest_mismatch, rollout_aborted, rollout_finished."""
        records = Log.read(log_path)
        start = records[0]
        job = start.get("job")
        if manifest is None:
            raise OtaError("bad_arguments", "--resume needs the --manifest of the rollout in %s" % log_path)
        logged = start.get("manifest") if isinstance(start.get("manifest"), dict) else {}
        differ = [k for k in ("url", "sha256", "size", "version") if logged.get(k) != manifest.get(k)]
        if differ:
            raise OtaError("manifest_mismatch", "%s is a rollout of another release (%s differ from the "
                           "manifest given)" % (log_path, ", ".join(differ)))
        mine = [r for r in records if r.get("rollout", job) == job]  # a foreign rollout's lines: ignored
        aborts = [r for r in mine if r["event"] == "abort"]
        if aborts:
            why = devstate.show(aborts[-1].get("reason"))
            raise OtaError("rollout_aborted", "the rollout in %s was aborted (%s): revert with `otactl "
                           "revert --log %s` or start a new rollout" % (log_path, why, log_path))
        if any(r["event"] == "done" for r in mine):
            raise OtaError("rollout_finished", "the rollout in %s completed: nothing to resume" % log_path)
        try:
            options = Options.from_dict(start["options"])
            targets = [devstate.check_id(d) for d in start["targets"]]
            bounds = [(int(lo), int(hi)) for lo, hi in start["stages"]]
        except (KeyError, TypeError, ValueError, OtaError) as e:
            # OtaError: stages, a setting or a device id the CLI would have refused; the record was
            # written from checked values, so the file is damaged, and that is what to say (not bad_stages)
            raise OtaError("bad_log", "%s: the start record is malformed (%s)" % (log_path, e))
        if len(set(targets)) != len(targets) or bounds != stage_bounds(len(targets), options.stages):
            raise OtaError("bad_log", "%s: targets or stages of the start record do not add up" % log_path)
        engine = cls(conn, manifest, options, log_path, job=job, on_event=on_event,
                     snapshot_timeout=snapshot_timeout, sign_key=sign_key, _resuming=True)
        engine.targets = targets
        engine.bounds = bounds
        engine.skipped = dict(start.get("skipped") or {})
        wanted = set(targets)
        for r in mine:
            device = r.get("device")
            if r["event"] == "trigger" and device in wanted:
                engine.triggered.add(device)
            elif r["event"] == "outcome" and device in engine.triggered and device not in engine.outcomes:
                record = dict(r, stage=engine._stage_of(device))  # counted once, in its own stage
                if record.get("outcome") in SUCCESS + FAILURE:
                    engine.outcomes[device] = record
                    engine._count(record)
            elif r["event"] == "stage" and r.get("stage") in range(len(bounds)):
                engine.decided_stages.add(r["stage"])
                if r.get("decision") == "advance":
                    engine.advanced_stages.add(r["stage"])
        engine.resumed = records
        return engine

    def _payload_for(self, device):
        message = self._message_for(device)[1]
        if self.sign_key is None:
            return self.payload if message is self.message else encode(message)[1]
        return encode(message, self.sign_key, target=device)[1]  # signed at send time: fresh expiry

    def _message_for(self, device):
        """(artifact kind, trigger) for a device: the smallest artifact it can use, by the version its
        state says it runs (otactl/artifacts.py: delta, else compressed, else full)."""
        from . import artifacts

        state = self.tracker.fleet.get(device) if self.tracker is not None else None
        kind, extra = artifacts.choose(self.manifest, state.version if state is not None else None)
        return kind, (dict(self.message, **extra) if extra else self.message)

    # --- bookkeeping --------------------------------------------------------------------------
    def _emit(self, event, durable=False, **fields):
        record = self.log.write(event, durable=durable, **fields)
        self.on_event(record)
        return record

    def _log_batch(self, batch):
        # before the batch's triggers leave (Tracker.launch): written, fsynced once, then shown
        records = [self.log.write("trigger", device=device, stage=self._stage_of(device),
                                  artifact=self._message_for(device)[0]) for device in batch]
        self.log.sync()
        for device, record in zip(batch, records):
            self.triggered.add(device)
            self.on_event(record)

    def _stage_of(self, device):
        if getattr(self, "_index", None) is None or len(self._index) != len(self.targets):
            self._index = {d: i for i, d in enumerate(self.targets)}
        index = self._index[device]
        for number, (lo, hi) in enumerate(self.bounds):
            if lo <= index < hi:
                return number
        return None

    def _count(self, record):
        counts = self.stage_counts.setdefault(record["stage"], {"ok": 0, "failed": 0})
        counts["ok" if record["outcome"] in SUCCESS else "failed"] += 1

    def _settle(self, tracker, device, outcome, reason, detail, stage):
        if device in self.outcomes:
            return
        fields = tracker.fleet.get(device)
        sent = tracker.forget(device)
        record = self._emit("outcome", device=device, stage=stage, outcome=outcome, reason=reason,
                            detail=detail, version=fields.version if fields else None)
        self.outcomes[device] = record
        self._count(record)
        return sent

    def _stage_counts(self, number):
        lo, hi = self.bounds[number]
        counts = dict(self.stage_counts.get(number, {"ok": 0, "failed": 0}))
        counts["pending"] = (hi - lo) - counts["ok"] - counts["failed"]
        return counts, hi - lo

    # --- the run ------------------------------------------------------------------------------
    def run(self):
        tracker = Tracker(self.conn, self.job, self.options.device_timeout)
        self.tracker = tracker
        tracker.start(self.snapshot_timeout)
        try:
            self._begin(tracker)
            for number, (lo, hi) in enumerate(self.bounds):
                if number in self.decided_stages:
                    continue
                self._run_stage(tracker, number, lo, hi)
                if self.aborted:
                    break
            return self._finish()
        except KeyboardInterrupt:
            self._emit("interrupted", in_flight=sorted(tracker.in_flight),
                       done=len(self.outcomes))
            raise
        finally:
            self.log.close()

    def _begin(self, tracker):
        if self.targets is None:
            targets, self.skipped = tracker.fleet.targets(self.manifest["version"], self.options.only_below)
            self.targets = _order(self.job, targets)
            if not self.targets:
                self.log.close()
                raise OtaError("no_targets", "no online device is below %s%s (%d devices seen: %s)" % (
                    self.manifest["version"],
                    " and below %s" % self.options.only_below if self.options.only_below else "",
                    len(tracker.fleet.devices), _count_text(self.skipped.values()) or "none"))
            self.bounds = stage_bounds(len(self.targets), self.options.stages)
            self._emit("start", durable=True, job=self.job, manifest=self.manifest,
                       options=self.options.as_dict(), targets=self.targets, skipped=self.skipped,
                       stages=self.bounds, trigger=self.message)
            return
        unresolved = sorted(self.triggered - set(self.outcomes))
        self._emit("resume", durable=True, done=len(self.outcomes), in_flight=unresolved)
        for device in unresolved:  # not re-triggered: watched from now, as if just sent
            tracker.watch(device, self._stage_of(device))
            current = tracker.fleet.get(device)
            if current is not None:
                verdict = tracker.judge(device, current.fields, self.manifest["version"])
                if verdict is not None:
                    self._settle(tracker, device, *verdict, stage=self._stage_of(device))
        tracker.drain_snapshot()

    def _run_stage(self, tracker, number, lo, hi):
        todo = [d for d in self.targets[lo:hi] if d not in self.outcomes and d not in self.triggered]
        wanted = self.manifest["version"]
        while True:
            if not self.aborted and todo:
                batch, todo = tracker.launch(todo, self.options.max_concurrent, self._payload_for, number,
                                             before_send=self._log_batch)
            if not tracker.in_flight and (self.aborted or not todo):
                break
            for device, verdict in tracker.settled(wanted, tracker.wait_time(time.monotonic())):
                self._settle(tracker, device, *verdict, stage=tracker.in_flight[device][1])
            if not self.aborted:
                counts, size = self._stage_counts(number)
                if counts["failed"] / size > self.options.abort_failure_rate:
                    self._abort(number, "failure_rate", counts, size)
        if self.aborted:
            return
        counts, size = self._stage_counts(number)
        rate = counts["ok"] / size
        if rate >= self.options.success_threshold:
            self.decided_stages.add(number)
            self.advanced_stages.add(number)
            self._emit("stage", durable=True, stage=number, decision="advance", devices=size,
                       success_rate=round(rate, 4), counts=counts)
        else:
            self._abort(number, "below_success_threshold", counts, size)

    def _abort(self, number, reason, counts, size):
        self.aborted = reason
        self.decided_stages.add(number)
        self._emit("stage", durable=True, stage=number, decision="abort", devices=size,
                   success_rate=round(counts["ok"] / size, 4), failure_rate=round(counts["failed"] / size, 4),
                   counts=counts)
        self._emit("abort", durable=True, stage=number, reason=reason,
                   detail="failure rate %d/%d > %g" % (counts["failed"], size, self.options.abort_failure_rate)
                   if reason == "failure_rate" else
                   "success rate %d/%d < %g" % (counts["ok"], size, self.options.success_threshold))

    def summary(self):
        by_outcome, reasons = {}, {}
        for record in self.outcomes.values():
            by_outcome[record["outcome"]] = by_outcome.get(record["outcome"], 0) + 1
            if record["outcome"] not in ("ok",) and record.get("reason"):
                reasons[record["reason"]] = reasons.get(record["reason"], 0) + 1
        not_started = [d for d in self.targets if d not in self.outcomes]
        first = self.resumed[0]["t"] if self.resumed else None
        return {
            "job": self.job,
            "version": self.manifest["version"],
            "result": "aborted" if self.aborted else "completed",
            "abort_reason": self.aborted,
            "targets": len(self.targets),
            "skipped": len(self.skipped),
            "outcomes": by_outcome,
            "reasons": reasons,
            "not_started": len(not_started),
            "stages_done": len(self.decided_stages),
            "stages_advanced": len(self.advanced_stages),
            "stages": len(self.bounds),
            # devices not to be believed (otactl/tracking.py): flooding, duplicate_id, bad_state;
            # copied first: paho's thread may add one while we sort
            "suspects": dict(sorted(self.tracker.suspects.copy().items())) if self.tracker else {},
            "duration_s": round(time.monotonic() - self.started, 3),
            "since_first_start_s": round(time.time() - first, 3) if first else None,
        }

    def _finish(self):
        summary = self.summary()
        self._emit("done", durable=True, result=summary["result"], summary=summary)
        return summary


def _count_text(values):
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join("%d %s" % (n, k) for k, n in sorted(counts.items()))


def check_version(version):
    compare_versions(version, version)
    return version
