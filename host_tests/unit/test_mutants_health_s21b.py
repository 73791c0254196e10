"""ota.health.roll_back, what the session-21 run left: a failure without a detail (a replaced
selftest.py may answer (False, None): the simulator's bad release replaces that file) prints the
reason alone, not "None" or anything else after it. CPython."""
import fakes  # noqa: F401  (puts lib/ on sys.path)
from ota import health


class Jobs:
    def update(self, **fields):
        self.fields = fields


class Machine:
    def reset(self):
        pass


def test_a_rollback_without_detail_prints_the_reason_alone(capsys):
    jobs = Jobs()
    health.roll_back(jobs, Machine(), "selftest_failed", None)
    assert capsys.readouterr().out == "health: rolling back: selftest_failed \n"
    assert jobs.fields == {"state": "rolling_back", "reason": "selftest_failed", "detail": None}
