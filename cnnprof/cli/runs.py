"""One command over many models: resolve each MODEL argument, compute its result with a library function,
stream rows to --output as they are produced, and render all of them at the end."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from cnnprof.cli.common import add_overrides, emit_report, for_each_model, open_output


def job_name(job: Any) -> str:
    """A job is a MODEL argument, or (argument, batch size)."""
    return job[0].text if isinstance(job, tuple) else job.text


@dataclass
class ModelRun:
    """compute(source, job) -> result for every job; report(results) -> the report layer's (tables, JSON, CSV)."""

    compute: Callable[[Any, Any], Any]
    report: Callable[[list[Any]], Any] | None  # None: the command renders its results itself
    what: str
    name: Callable[[Any], str] = job_name
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # row label -> effective overrides

    def one(self, job: Any) -> Any:
        """Resolve a job's model (its own and the run-wide settings) and compute its result."""
        from cnnprof.cli.models_arg import resolve_arg

        arg = job[0] if isinstance(job, tuple) else job
        source = resolve_arg(arg)
        self.overrides[source.label] = arg.overrides()
        return self.compute(source, job)

    def rendered(self, results: list[Any]) -> Any:
        return add_overrides(self.report(results), self.overrides)

    def _stream(self, writer: Any, result: Any) -> None:
        writer.add(*self.rendered([result])[1:])

    def results(self, jobs: list[Any], output: str | None = None) -> tuple[list[Any], int]:
        """(results, exit code so far): failures are reported and skipped, an interruption keeps the rest."""
        writer = open_output(output)
        on_result = partial(self._stream, writer) if writer else None
        return for_each_model(jobs, self.one, self.what, name=self.name, on_result=on_result)

    def run(self, jobs: list[Any], fmt: str, output: str | None = None) -> int:
        """Compute every job and print the report; returns the exit code."""
        results, code = self.results(jobs, output)
        emit_report(fmt, self.rendered(results), code, "models")
        return code
