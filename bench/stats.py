"""Percentiles and the record of one load step."""

import math
from dataclasses import asdict, dataclass, field


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The nearest-rank percentile `q` (0-100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


@dataclass
class StepResult:
    """One step of an open-loop ladder: what was offered and what came back."""

    scenario: str  # unicast | batch | fanout | reply | sse-fanout
    rate: float  # requests scheduled per second
    offered_deliveries_per_s: float
    duration_s: float
    requests_sent: int = 0
    requests_accepted: int = 0
    request_errors: dict = field(default_factory=dict)  # status -> count (0: connection)
    expected: int = 0  # deliveries owed: accepted messages x their recipients
    promised: int = 0  # sum of `delivered` in the gateway's receipts
    received: int = 0  # deliveries heard within the drain time
    lost: int = 0
    duplicates: int = 0
    misrouted: int = 0
    # SSE: deliveries whose ids were wrong (differing from the receipt's or
    # between streams, out of order, or not the resume position of the `id:` line).
    id_errors: int = 0
    stale: int = 0  # frames of an earlier step heard during this one
    clients_closed: int = 0  # closed by the gateway during the step
    clients_down: int = 0  # not connected at the end of the step (closed at any time)
    aborted: bool = False  # the gateway fell behind by more than the abort lag
    achieved_deliveries_per_s: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    generator_lag_p99_ms: float | None = None  # schedule -> request written
    generator_cpu: float = 0.0  # share of one core
    server_cpu: list = field(default_factory=list)  # per gateway process
    redis_cpu: float | None = None
    cpu_busy: dict = field(default_factory=dict)  # per CPU, whole machine
    other_cpu: float = 0.0  # cores used by other processes during the step
    other_cpu_before: float = 0.0  # ... just before it, after waiting for quiet
    quiet_wait_s: float = 0.0
    noisy_retry_of: dict | None = None  # the first try, when other processes spoiled it
    limit_ms: float = 50.0
    passed: bool = False
    error_samples: list = field(default_factory=list)

    def judge(self) -> None:
        self.passed = (
            not self.aborted
            and not self.request_errors
            and self.lost == 0
            and self.clients_closed == 0
            and self.clients_down == 0
            and self.misrouted == 0
            and self.id_errors == 0
            and self.received > 0
            and self.p99_ms is not None
            and self.p99_ms < self.limit_ms
        )

    def as_dict(self) -> dict:
        return asdict(self)


def sustained(steps: list[StepResult]) -> StepResult | None:
    """The passing step with the highest offered rate."""
    passing = [s for s in steps if s.passed]
    return max(passing, key=lambda s: s.offered_deliveries_per_s) if passing else None
