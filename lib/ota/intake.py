# Trigger intake: what a command message on our topics means. Parse it (trigger.py), check the target,
# drop duplicates (a replayed signed trigger is refused later, by its seq), refuse while a job runs or
# waits. take() answers with the job to queue, None for a message that needs no answer, or raises
# OtaError: the refusal, which the agent publishes with its reason code. Nothing runs here and nothing
# is written: the agent (agent.py) queues the job and its loop runs it once the PUBACK is out.
from ota import signature, trigger
from ota.errors import OtaError


class Intake:
    # device_id: whose triggers we take; own_topic: this device's command topic (a trigger for another
    # device there is a mistake worth saying so). jobs: the job store (jobs.Jobs), only asked whether
    # an unsigned job id was seen before.
    def __init__(self, device_id, own_topic, jobs):
        self.device_id = device_id
        self.own_topic = own_topic
        self.own_topic_bytes = own_topic.encode()
        self.jobs = jobs

    def take(self, topic, payload, running=None, queued=None):
        # running, queued: the job being run and the one waiting for the loop (None: none). Returns
        # the job (trigger.parse's dict, with an id) or None. Raises OtaError: trigger.parse's reasons,
        # wrong_target, busy; MemoryError on a heap that ran out.
        try:
            job = trigger.parse(payload)
        except OtaError as e:
            print("agent: bad trigger:", e)
            raise
        if job is None:
            return None
        return self.admit(job, topic, running, queued)

    def admit(self, job, topic, running=None, queued=None, pressed=False):
        # A parsed trigger (take(), or the announced release Home Assistant's Install asks for: ha.py):
        # the target, duplicates, busy. pressed: a person waits for an answer, even to a duplicate
        # (already_run). Returns the job or None; raises OtaError.
        if not signature.target_matches(job["target"], self.device_id):
            # On the fleet topic a trigger for other devices is none of our business; on our own
            # topic it is a mistake (or a replay) worth saying so.
            if topic == self.own_topic or topic == self.own_topic_bytes:
                raise OtaError("wrong_target", "for %s, not %s" % (job["target"], self.device_id))
            return None
        if job["id"] is None and job["signature"] is None:  # a signed trigger must carry its own id
            job["id"] = auto_id(job)
        if job["signature"] is not None:
            # Signed: the list of seen ids is not asked (anyone on the broker can fill it); the
            # signed seq decides, after the signature (signature.check, replay.py). Only the very
            # same signed trigger running or queued is a QoS 1 redelivery, dropped silently.
            for other in (running, queued):
                if other is not None and other.get("signature") == job["signature"]:
                    print("agent: duplicate job ignored:", job["id"])
                    return None
        elif job["id"] is not None and (self.jobs.seen_before(job["id"]) or (queued or {}).get("id") == job["id"]):
            print("agent: duplicate job ignored:", job["id"])  # a QoS 1 redelivery, a retained trigger
            if pressed and running is None:
                raise OtaError("already_run", "job %s ran before: announce the release again to retry" % job["id"])
            return None
        if running is not None or queued is not None:
            # job["id"] may be None here (a signed trigger carries no auto id; signature.check says
            # missing_id only once it runs): the detail must not assume a string.
            raise OtaError("busy", "refused %s" % (job["id"] or "a trigger without id"))
        return job


def too_long(size):
    # ota.mqtt drained a payload too big to hold: the refusal trigger.parse would give it.
    print("agent: bad trigger: too_long:", size, "bytes")
    return OtaError("too_long", "%d bytes > %d" % (size, trigger.MAX_PAYLOAD))


def auto_id(job):
    # A trigger without "id" (the seed guide's minimal message) gets one from its content, so its
    # redelivery is still recognised. To run the same URL again, send an "id".
    import hashlib
    from binascii import hexlify

    text = "%s|%s|%s|%s" % (job["type"], job.get("url"), job.get("sha256"), job.get("version"))
    return "auto-" + hexlify(hashlib.sha256(text.encode()).digest()[:6]).decode()
