"""What a stop signal must know: the command's run, and whether its result is decided."""

from __future__ import annotations

from typing import Any

from dagrun.errors import DagrunError


class Progress:
    """What main() must know when a signal arrives: which run a command works
    on, and whether its result is decided (then a signal changes nothing)."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.state_dir: str | None = None
        self.json_mode: bool | None = None
        self.reporter: Any = None
        self._decided = False

    @property
    def decided(self) -> bool:
        return self._decided or bool(getattr(self.reporter, "finished", False))

    @decided.setter
    def decided(self, value: bool) -> None:
        self._decided = value

    def reporter_for(self, run_id: str, state_dir: str, json_mode: bool,
                     quiet: bool = False) -> Any:
        from dagrun.listeners import logfile
        from dagrun.report import Guarded, QuietReporter, choose_reporter

        self.run_id, self.state_dir, self.json_mode = run_id, state_dir, json_mode
        if logfile.config.format == "json":  # log shippers: JSON lines only on stderr
            self.reporter = Guarded(logfile.stderr_log(run_id))
        elif logfile.LEVELS[logfile.config.level] >= logfile.LEVELS["warning"]:
            self.reporter = Guarded(QuietReporter())
        else:
            self.reporter = choose_reporter(json_mode, quiet=quiet)
        return self.reporter

    def existing_run(self) -> str | None:
        """The command's run id if its folder exists (it can be resumed)."""
        from dagrun.store.runs import StateDir

        if self.run_id is None or self.state_dir is None:
            return None
        try:
            path = StateDir(self.state_dir).run_path(self.run_id)  # checks the id
        except DagrunError:
            return None
        return self.run_id if (path / "run.json").exists() else None


# One per process: main() runs one command.
progress = Progress()
