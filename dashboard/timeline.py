"""A run's steps on a time axis: where each call starts in the run and how long it took, as
shares of the run's span for the page to draw, with the run's totals."""

from dataclasses import dataclass
from decimal import Decimal

from analytics.models import RequestLog
from analytics.selectors import RunSummary

# A call of a few milliseconds in a run of minutes still shows as a sliver.
MIN_BAR_PERCENT = 0.6
TICKS = 4


@dataclass(frozen=True)
class TimelineStep:
    number: int
    row: RequestLog
    start_ms: int  # since the run's first call began
    left: float  # percent of the run's span before the call began
    width: float  # percent of the run's span the call took
    fell_back: bool
    failed: bool


@dataclass(frozen=True)
class Timeline:
    steps: list[TimelineStep]
    # (percent of the span, milliseconds since the run began) of each mark on the axis.
    ticks: list[tuple[float, int]]
    duration_ms: int  # from the first call's start to the last call's end
    prompt_tokens: int
    completion_tokens: int
    spend: Decimal

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def run_timeline(run: RunSummary) -> Timeline:
    """A row's ``created`` is when its call arrived, its ``latency_ms`` how long it took to answer."""
    steps = run.steps
    began = min(step.created for step in steps)
    starts = [round((step.created - began).total_seconds() * 1000) for step in steps]
    duration = max(start + step.latency_ms for start, step in zip(starts, steps, strict=True))
    span = max(duration, 1)
    placed = []
    for number, (start, step) in enumerate(zip(starts, steps, strict=True), start=1):
        left = 100 * start / span
        width = min(max(100 * step.latency_ms / span, MIN_BAR_PERCENT), 100 - left)
        placed.append(TimelineStep(number=number, row=step, start_ms=start, left=round(left, 2),
                                   width=round(max(width, 0), 2), fell_back=number in run.fallback_steps,
                                   failed=step.status >= 400))
    return Timeline(
        steps=placed,
        ticks=[(100 * mark / TICKS, round(duration * mark / TICKS)) for mark in range(TICKS + 1)],
        duration_ms=duration,
        prompt_tokens=sum(step.prompt_tokens for step in steps),
        completion_tokens=sum(step.completion_tokens for step in steps),
        spend=run.spend,
    )
