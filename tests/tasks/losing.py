"""A local executor that loses its "cluster": once a marker file exists, its
next poll raises ExecutorLost, as the Dask backend does when the scheduler
goes away. Tests install it with the LOSE_AFTER wrapper of test_executor_lost."""

from __future__ import annotations

import os

from dagrun.errors import ExecutorLost
from dagrun.executor.process import ProcessExecutor


class LosingExecutor(ProcessExecutor):
    def poll(self, timeout):
        if os.path.exists(os.environ["DAGRUN_TEST_LOSE_WHEN"]):
            raise ExecutorLost("lost the cluster (the test's marker file appeared)")
        return super().poll(timeout)
