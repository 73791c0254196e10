"""ota.agent, what the session-21 mutation run over ota.agent left (test_mutants_agent.py has the
rest): a payload too big to hold refused on the state topic through the real guarded client, what a
rollback found at boot leaves in the job record, what reset a new image that left no reason, and the
job a new image's "confirming" names. CPython, test_agent_unit's fakes."""
import pytest

import fakes  # noqa: F401  (puts lib/ on sys.path)
import test_agent_unit
from test_agent_unit import FakeMQTT, _update_boot, agent, connected
from test_mutants_agent import states
from test_mutants_mqtt import Sock, _publish
from ota import jobs, mqtt

env = test_agent_unit.env  # test_agent_unit's fixture, registered here


class UmqttLike(FakeMQTT):
    # FakeMQTT with umqtt.simple's reading surface (_recv_len, check_msg -> wait_msg), so that
    # ota.mqtt guards it as it guards the real class: the broker's bytes come from a Sock.
    broker_bytes = b""

    def connect(self, clean_session=True):
        FakeMQTT.connect(self, clean_session)
        self.sock = Sock(UmqttLike.broker_bytes, closed=False)
        self.sock.close = lambda: None

    def _recv_len(self):
        n = sh = 0
        while True:
            b = self.sock.read(1)[0]
            n |= (b & 0x7F) << sh
            if not b & 0x80:
                return n
            sh += 7

    def check_msg(self):
        self._io()
        self.sock.setblocking(False)
        return self.wait_msg()


def test_a_payload_too_big_to_hold_is_refused_as_too_long(env, monkeypatch):
    monkeypatch.setattr(mqtt, "_guarded", {})
    UmqttLike.broker_bytes = _publish(b"/switch/cmd/root", b"x" * 5000)
    a = agent.Agent(env.cfg, mqtt_class=UmqttLike, network_module=test_agent_unit.network,
                    jobs_path=env.jobs_path)
    connected(a)
    a.link.check()
    last = states(a)[-1]
    assert (last["state"], last["reason"]) == ("failed", "too_long") and "5000" in last["detail"]


def test_a_rollback_found_at_boot_is_kept_in_the_job_record_and_said_again_after_a_reboot(env):
    _update_boot(env)
    jobs.Jobs(env.jobs_path).update(state="rolling_back", reason="selftest_failed", detail="relay stuck")
    env.esp.running = "ota_0"  # the bootloader went back
    env.make()
    record = jobs.Jobs(env.jobs_path).current
    assert (record["state"], record["reason"], record["detail"]) == ("rolled_back", "selftest_failed", "relay stuck")
    a = env.make()  # the next boot: the outcome stays visible, from the record alone
    connected(a)
    last = states(a)[-1]
    assert (last["state"], last["job"], last["reason"], last["detail"]) == (
        "rolled_back", "job-9", "selftest_failed", "relay stuck")


@pytest.mark.parametrize("cause, words", [(3, "hung: the watchdog reset it"), (1, "lost power"),
                                          (2, "reset itself before it confirmed")])
def test_a_new_image_that_left_no_reason_is_judged_by_the_reset_that_ended_it(env, monkeypatch, cause, words):
    _update_boot(env)
    env.esp.running = "ota_0"
    monkeypatch.setattr(agent.machine, "reset_cause", lambda: cause)
    a = env.make()
    connected(a)
    last = states(a)[-1]
    assert (last["state"], last["reason"]) == ("rolled_back", "boot_failed") and words in last["detail"], last
    record = jobs.Jobs(env.jobs_path).current  # what the next boot says again (the record had no reason)
    assert (record["state"], record["reason"], record["detail"]) == ("rolled_back", "boot_failed", last["detail"])


def test_a_new_images_first_boot_says_confirming_with_its_job(env):
    _update_boot(env)
    a = env.make()
    connected(a)
    last = states(a)[-1]
    assert (last["state"], last["job"]) == ("confirming", "job-9")
