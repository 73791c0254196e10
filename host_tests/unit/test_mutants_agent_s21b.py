"""ota.agent, what the session-21 run left: the console line of the reconnect after a job that ended
without MQTT names ECONNRESET (104), like a lost link, not another errno (the message catalogue
reads the number as "#", so it cannot see a wrong one). CPython, test_agent_unit's fakes."""
import json

import fakes  # noqa: F401  (puts lib/ on sys.path)
import test_agent_unit
from test_agent_unit import FakeMQTT, Updater
from test_mutants_agent import _loop

env = test_agent_unit.env  # test_agent_unit's fixture, registered here


def test_the_reconnect_after_a_job_prints_econnreset(env, monkeypatch, capsys):
    holder = {}
    up = Updater(result={"result": "same_version", "version": "1.0.0"}, during=lambda done: holder["a"].link.drop())
    a = holder["a"] = env.make(up)

    def stop(sleeps):
        if len(sleeps) == 1:
            a.link.client.incoming.append((b"/switch/cmd/root", json.dumps(
                {"type": "ota_trigger", "url": "https://fw.example.com/a.bin", "id": "q1"}).encode()))
        return len(FakeMQTT.instances) == 2 and sleeps[-1][1] == 0.1

    _loop(env, monkeypatch, a, stop)
    assert up.calls
    assert "agent: connection lost: [Errno 104] reconnect after job\n" in capsys.readouterr().out
