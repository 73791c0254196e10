# Trigger intake: what umqtt's callback does with a command message. Parse (trigger.py), check the
# target, drop duplicates (a replayed signed trigger is refused later, by its seq), refuse while
# busy, and queue the trigger as agent.pending. Nothing runs here: the agent's loop runs the queued
# trigger (commands.py) once the PUBACK is out. Every refusal is published on the state topic with
# its reason code.
from ota import signature, trigger
from ota.errors import OtaError, unexpected


class Intake:
    def __init__(self, agent):
        self.agent = agent  # device_id, cmd_topics, jobs, pending, busy, publish, reporter

    def on_message(self, topic, payload):
        # umqtt's callback: parse and queue only; the job runs from the loop once the PUBACK is sent.
        try:
            self._take(topic, payload)
        except MemoryError:
            # umqtt has read the whole packet already, so the connection is still in step: the heap
            # running out costs this one message, said as such, not the broker connection (and the
            # messages sent while reconnecting). Its PUBACK still goes out: no redelivery loop.
            print("agent: trigger refused: low_memory")
            self.refuse("low_memory", "MemoryError while taking in the message")
        except Exception as e:  # a message the checks missed costs that message, never the agent
            error = unexpected(e)
            self.refuse(error.reason, error.detail)

    def _take(self, topic, payload):
        pressed = False  # HA's Install: a person waits for an answer, even to a duplicate
        try:
            ha = self.agent.ha
            if ha is not None and ha.mine(topic, payload):  # HA's Install, or the release announcement
                job = pressed = ha.take(topic, payload)
                if job is None:  # an announcement: what the entity offers may have changed
                    self.agent.publish_entity()
            else:
                job = trigger.parse(payload)
        except OtaError as e:
            print("agent: bad trigger:", e)
            self.refuse(e.reason, e.detail)
            return
        if job is None:
            return
        if not signature.target_matches(job["target"], self.agent.device_id):
            # On the fleet topic a trigger for other devices is none of our business; on our own
            # topic it is a mistake (or a replay) worth saying so.
            if topic == self.agent.cmd_topics[1] or topic == self.agent.cmd_topics[1].encode():
                self.refuse("wrong_target", "for %s, not %s" % (job["target"], self.agent.device_id))
            return
        if job["id"] is None and job["signature"] is None:  # a signed trigger must carry its own id
            job["id"] = auto_id(job)
        if job["signature"] is not None:
            # Signed: the list of seen ids is not asked (anyone on the broker can fill it); the
            # signed seq decides, after the signature (signature.check, replay.py). Only the very
            # same signed trigger running or queued is a QoS 1 redelivery, dropped silently.
            for other in (self.agent.busy, self.agent.pending):
                if other is not None and other.get("signature") == job["signature"]:
                    print("agent: duplicate job ignored:", job["id"])
                    return
        elif job["id"] is not None and (self.agent.jobs.seen_before(job["id"])
                                        or (self.agent.pending or {}).get("id") == job["id"]):
            print("agent: duplicate job ignored:", job["id"])  # a QoS 1 redelivery, a retained trigger
            if pressed and self.agent.busy is None:
                self.refuse("already_run", "job %s ran before: announce the release again to retry" % job["id"])
            return
        if self.agent.busy is not None or self.agent.pending is not None:
            # job["id"] may be None here (a signed trigger carries no auto id; signature.check says
            # missing_id only once it runs): the detail must not assume a string.
            self.refuse("busy", "refused %s" % (job["id"] or "a trigger without id"))
            return
        self.agent.pending = job

    def on_oversize(self, topic, size):
        # ota.mqtt drained a payload too big to hold: refused as trigger.parse would refuse it.
        print("agent: bad trigger: too_long:", size, "bytes")
        self.refuse("too_long", "%d bytes > %d" % (size, trigger.MAX_PAYLOAD))

    def refuse(self, reason, detail, keep_state=False):
        # A trigger that is not run. While a job runs (or keep_state) the state stays, with the
        # reason added.
        if self.agent.busy is None and not keep_state:
            self.agent.publish("failed", reason=reason, detail=detail)
        else:
            name, fields = self.agent.reporter.last_state
            fields = dict(fields)
            fields.update(reason=reason, detail=detail)
            self.agent.publish(name, **fields)


def auto_id(job):
    # A trigger without "id" (the seed guide's minimal message) gets one from its content, so its
    # redelivery is still recognised. To run the same URL again, send an "id".
    import hashlib
    from binascii import hexlify

    text = "%s|%s|%s|%s" % (job["type"], job.get("url"), job.get("sha256"), job.get("version"))
    return "auto-" + hexlify(hashlib.sha256(text.encode()).digest()[:6]).decode()
