"""The batching policy: when to dispatch, how many rows, and which requests to turn away.

Everything here is pure: no asyncio, no clock of its own. Each method takes `now` (seconds on any
monotonic clock), so the policy is tested with made-up times.

The policy in short:

- It learns a batch's execution time as `a + b * rows` (`LatencyModel`) and the recent spacing of
  arriving rows (`ArrivalGauge`). Until it has seen a batch it never waits and never sheds.
- When a batch slot is free it dispatches at once if the batch is full, and otherwise waits for the
  next row only while that row is expected sooner than `a / (rows + 1)`: waiting that long delays
  the `rows` queued rows, while the new row, if left behind, would pay a whole extra batch overhead
  `a`. Waiting never lets the oldest request miss `max_latency_ms`, and never lasts longer than a
  full batch takes to run (counted from the head's arrival or the last batch's end, whichever is
  later: time queued behind a running batch was not spent waiting by choice; and once the callers
  that batch answered are coming back, from the first of them, their round trip being no choice
  either).
- Callers with a fixed concurrency (a proxy's connection pool, a client's worker pool) send again
  once answered, after a round trip. So rows left over when a batch ends also wait for the rows it
  answered, through the silence before they start coming and while they come fast enough to pay,
  rather than running alone and holding the model while the answered callers queue behind them.
  One slow row among them does not end that wait: a caller left behind waits a whole batch. The
  first arrival after an answer is taken for one of them when it comes no later than a full batch
  takes or four times the usual round trip (learned from answers whose callers all came back);
  later, it is new traffic after a pause.
- A batch holds no more rows than can run before the oldest request's deadline, but never fewer
  than the *sustainable* size, the largest batch that runs in half of `max_latency_ms` (a request
  waits at most one batch, then runs in the next). An old request that would make the batch smaller
  is dropped instead: shrinking batches under load would only lower throughput and age the queue.
- Under overload it rejects a new request when the queue ahead of it is predicted to take longer
  than `max_latency_ms` to drain (fail fast), and drops a queued request that would miss its
  deadline in the batch about to start; only requests admitted once the latency model has seen
  enough batches to be trusted are ever turned away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from raystore._private.batch_config import BatchConfig


class LatencyModel:
    """Online estimate of a batch's execution time as `a + b * rows` seconds.

    A least-squares line over past batches, weighted three ways:

    - recency: every new batch multiplies the weight of older ones by `decay`, so the line follows a
      model whose speed changes (warm caches, a noisy neighbour);
    - robustness: a batch far off the line (more than `outlier_spreads` typical deviations) counts
      for proportionally less, so one stall does not skew it (Huber weighting);
    - the first `warmup_batches` are ignored: a first call usually pays for lazy initialisation.

    While the observed batch sizes are too alike to tell `a` from `b`, the line goes through the
    origin (`a = 0`): it claims no benefit from batching until it has seen one, which keeps waiting
    off and overestimates larger batches, the safe side for admission. Once varied sizes have told
    them apart, batches of one size (a steady load) keep the last slope `b` and update `a`.
    """

    def __init__(
        self,
        *,
        decay: float = 0.95,
        warmup_batches: int = 1,
        trusted_after: int = 8,
        outlier_spreads: float = 3.0,
    ):
        self._decay = decay
        self._warmup_left = warmup_batches
        self._trusted_after = trusted_after
        self._outlier_spreads = outlier_spreads
        # Weighted sums: weight, rows, rows^2, seconds, rows*seconds, seconds^2.
        self._w = self._wn = self._wnn = self._wt = self._wnt = self._wtt = 0.0
        self.observations = 0
        self.a = 0.0
        self.b = 0.0
        self.spread = 0.0  # recent root-mean-square deviation from the line, in seconds
        self._slope_known = False  # whether varied batch sizes have ever told `a` from `b`

    @property
    def ready(self) -> bool:
        """Whether there is any estimate at all."""
        return self.observations > 0

    @property
    def trusted(self) -> bool:
        """Whether the estimate has seen enough batches to turn requests away on its word."""
        return self.observations >= self._trusted_after

    def predict(self, rows: int) -> float:
        """Expected execution time of a batch of `rows` rows (0.0 before the first observation)."""
        return self.a + self.b * rows

    def predict_upper(self, rows: int) -> float:
        """A cautious execution time: the expectation plus two typical deviations."""
        return self.predict(rows) + 2.0 * self.spread

    def observe(self, rows: int, seconds: float) -> None:
        """Record that a batch of `rows` rows took `seconds` to execute."""
        if rows <= 0 or seconds < 0:
            return
        if self._warmup_left > 0:
            self._warmup_left -= 1
            return
        weight = 1.0
        if self.observations >= 3:
            # A floor on the scale: a perfectly straight history must not make every wobble an outlier.
            scale = self._outlier_spreads * max(self.spread, 0.05 * self.predict(rows))
            residual = abs(seconds - self.predict(rows))
            if residual > scale:
                weight = scale / residual
        decay = self._decay
        self._w = self._w * decay + weight
        self._wn = self._wn * decay + weight * rows
        self._wnn = self._wnn * decay + weight * rows * rows
        self._wt = self._wt * decay + weight * seconds
        self._wnt = self._wnt * decay + weight * rows * seconds
        self._wtt = self._wtt * decay + weight * seconds * seconds
        self.observations += 1
        self._fit()
        self._measure_spread()

    def _fit(self) -> None:
        mean_n = self._wn / self._w
        mean_t = self._wt / self._w
        var_n = self._wnn / self._w - mean_n * mean_n
        if var_n > max(0.25, (0.1 * mean_n) ** 2):
            b = (self._wnt / self._w - mean_n * mean_t) / var_n
            a = mean_t - b * mean_n
            if b < 0:  # noise made bigger batches look faster: read it as "size does not matter"
                self.a, self.b = mean_t, 0.0
                self._slope_known = True
                return
            if a >= 0:
                self.a, self.b = a, b
                self._slope_known = True
                return
        elif self._slope_known and mean_t >= self.b * mean_n:
            # Sizes too alike to tell `a` from `b` now, but they were told apart before (a steady
            # load settles on one size): keep the slope and move the line through the recent mean.
            self.a = mean_t - self.b * mean_n
            return
        # Sizes too alike, or a negative overhead: a line through the origin.
        self.a, self.b = 0.0, self._wnt / self._wnn

    def _measure_spread(self) -> None:
        """The weighted root-mean-square residual of the current line, from the running sums."""
        a, b = self.a, self.b
        squares = (
            self._wtt
            - 2 * a * self._wt
            - 2 * b * self._wnt
            + a * a * self._w
            + 2 * a * b * self._wn
            + b * b * self._wnn
        )
        self.spread = math.sqrt(max(squares, 0.0) / self._w)


class ArrivalGauge:
    """The recent spacing of arriving rows: a moving average of the gap between rows.

    A request of `r` rows arriving `g` seconds after the previous one counts as a gap of `g / r`
    per row. Gaps are capped at `cap` seconds (the caller passes the longest gap it would ever
    wait for), so one long idle spell does not drown the signal of the next burst.
    """

    def __init__(self, smoothing: float = 0.2):
        self._smoothing = smoothing
        self.last_arrival: float | None = None
        self.row_gap: float | None = None

    def observe(self, now: float, rows: int, cap: float) -> None:
        if self.last_arrival is not None and rows > 0:
            gap = min(max(now - self.last_arrival, 0.0) / rows, cap)
            self.row_gap = gap if self.row_gap is None else self.row_gap + self._smoothing * (gap - self.row_gap)
        self.last_arrival = now


@dataclass(frozen=True)
class Dispatch:
    """Start a batch of `rows` rows now."""

    rows: int


@dataclass(frozen=True)
class Wait:
    """Dispatch nothing yet; decide again at `until` or when something changes."""

    until: float


Decision = Dispatch | Wait

# With nothing known about the model, gaps are capped here (seconds).
_COLD_GAP_CAP = 1.0
# Admission plans with this share of the latency budget left unused: the budget also has to cover
# the event loop's own delays in handing results back, which the latency model does not see.
_ADMISSION_HEADROOM = 0.05


class BatchPolicy:
    """Decides batch sizes, waiting, admission and shedding for one dispatcher."""

    def __init__(
        self,
        config: BatchConfig,
        latency: LatencyModel | None = None,
        arrivals: ArrivalGauge | None = None,
    ):
        self.config = config
        self.latency = latency or LatencyModel()
        self.arrivals = arrivals or ArrivalGauge()
        self._sized_key: tuple | None = None
        self._sizes = (0, 0, 0.0)
        self._answered_at: float | None = None
        self._answered_rows = 0
        self._arrived_since_answer = 0
        self._first_return_at = 0.0  # the first arrival since the last answer
        self._returning = False  # whether that first arrival looked like an answered caller back
        self._silence: float | None = None  # smoothed time from an answer to the first caller back
        self._pending_silence: float | None = None  # this cycle's, learned once all answered rows came

    # ---- learning ---------------------------------------------------------------------------

    def on_arrival(self, now: float, rows: int) -> None:
        cap = self.latency.a if self.latency.ready else _COLD_GAP_CAP
        self.arrivals.observe(now, rows, cap)
        if self._arrived_since_answer == 0:
            self._first_return_at = now
            if self._answered_at is not None:
                self._on_first_return(now - self._answered_at)
        self._arrived_since_answer += rows
        if self._pending_silence is not None and self._arrived_since_answer >= self._answered_rows:
            self._learn_silence(self._pending_silence)

    def _on_first_return(self, silence: float) -> None:
        """The first arrival since an answer came `silence` after it. It counts as an answered
        caller back if the silence is no longer than a full batch takes or than four times the
        usual silence (a round trip through a proxy can take longer than a cheap model's batch);
        later than that, it is open-loop traffic after a pause. The silence is learned only once
        as many rows as were answered have come (a closed loop's callers all come back), and
        clipped: a burst of new traffic after a pause says nothing of a round trip."""
        usual = self.latency.predict(self.config.max_batch_size)
        if self._silence is not None:
            usual = max(usual, 4 * self._silence)
        self._returning = silence <= usual
        self._pending_silence = min(silence, usual)

    def _learn_silence(self, sample: float) -> None:
        self._silence = sample if self._silence is None else self._silence + 0.2 * (sample - self._silence)
        self._pending_silence = None

    def on_batch_done(self, rows: int, seconds: float, now: float | None = None) -> None:
        """A batch of `rows` rows ran in `seconds`, and its callers were answered at `now`."""
        self.latency.observe(rows, seconds)
        if now is not None:
            self._answered_at, self._answered_rows, self._arrived_since_answer = now, rows, 0
            self._pending_silence = None  # not all of the previous batch's callers came back

    # ---- sizing -----------------------------------------------------------------------------

    def deadline(self, now: float, rows: int) -> float:
        """When a request of `rows` rows arriving `now` must be done.

        `now + max_latency_ms`, except that a request too big to finish in that time even on an
        idle model gets the time it needs alone.
        """
        if rows <= self._sized()[1]:  # the common case, without working out the drain time
            return now + self.config.max_latency_s
        return now + max(self.config.max_latency_s, self._drain_time(rows, slots=1))

    def batch_limit(self, now: float, head_deadline: float) -> int:
        """The most rows the next batch may hold: `max_batch_size`, no more than can run before
        the oldest waiting request's deadline, but at least the sustainable batch size."""
        limit = self.config.max_batch_size
        latency = self.latency
        if latency.ready and latency.b > 0:
            fits = math.floor((head_deadline - now - latency.predict_upper(0)) / latency.b)
            limit = max(self.sustainable_batch_size(), min(limit, fits))
        return limit

    def sustainable_batch_size(self) -> int:
        """The largest batch (at most `max_batch_size`) that runs within half the latency budget:
        under sustained load a request then waits for one batch and runs in the next."""
        return self._sized()[0]

    def _sized(self) -> tuple[int, int, float]:
        """(the sustainable batch size, the most rows up to it whose single batch fits the whole
        latency budget, a cautious time for a batch of that size), recomputed only when the latency
        model or the settings change: they are asked several times per request."""
        latency, config = self.latency, self.config
        key = (latency.observations, config.max_batch_size, config.max_latency_s)
        if key == self._sized_key:
            return self._sizes
        size = config.max_batch_size
        if latency.ready and latency.b > 0:
            fits = math.floor((config.max_latency_s / 2 - latency.predict_upper(0)) / latency.b)
            size = max(1, min(size, fits))
        within_budget = size if self._drain_time_of(size, size, 1) <= config.max_latency_s else 0
        self._sized_key, self._sizes = key, (size, within_budget, latency.predict_upper(size) if latency.ready else 0.0)
        return self._sizes

    def decide(
        self,
        now: float,
        ready_rows: int,
        can_grow: bool,
        head_enqueued_at: float,
        head_deadline: float,
    ) -> Decision:
        """What to do while a batch slot is free and requests are waiting.

        `ready_rows`: rows the next batch could take now (the oldest compatible requests);
        `can_grow`: whether rows arriving later could still join that batch.
        """
        limit = self.batch_limit(now, head_deadline)
        if ready_rows >= limit:
            return Dispatch(limit)
        latency = self.latency
        if not can_grow or not latency.ready:
            return Dispatch(ready_rows)
        patience = latency.a / (ready_rows + 1)  # the longest expected gap still worth waiting for
        gap = self.arrivals.row_gap
        last = self.arrivals.last_arrival
        burst_over = None  # when the arrivals worth waiting for are over
        if gap is not None and last is not None and gap < patience:
            burst_over = last + patience  # no row for that long: the burst is over
        waiting_since = head_enqueued_at
        answered_at = self._answered_at
        if answered_at is not None:
            # Time spent queued behind a running batch was not spent waiting by choice; nor, once
            # answered callers are coming back, was the silence of their round trip.
            started_waiting = answered_at
            returning_by = self._returning_by(ready_rows)
            if returning_by is not None:
                burst_over = returning_by if burst_over is None else max(burst_over, returning_by)
                if self._arrived_since_answer > 0:
                    started_waiting = self._first_return_at
            waiting_since = max(waiting_since, started_waiting)
        if burst_over is None:
            return Dispatch(ready_rows)
        until = min(
            burst_over,
            head_deadline - latency.predict_upper(min(limit, ready_rows + 1)),
            waiting_since + latency.predict(limit),  # by then a full batch could have run
        )
        if until <= now:
            return Dispatch(ready_rows)
        return Wait(until)

    def _returning_by(self, ready_rows: int) -> float | None:
        """Until when to wait for the callers the last batch answered, or None not to.

        Callers with a fixed concurrency send again once answered, after a round trip: the rows the
        last batch answered are likely still to come. Waiting `w` for `k` of them pays while
        `w < k * predict(rows) / rows`: the queued rows each wait `w`, while each row left behind
        would wait out the batch about to run (and then, its batch mates being these very callers,
        their round trip too). So wait through the silence before the first one comes back, and
        then, once two are back, while they come back at a pace that pays; this is judged apart
        from the smoothed gap, which one slow row in a burst can inflate. A first arrival much
        later than usual is not one of them (`_on_first_return`): that is open-loop traffic after
        a pause, and a lone request must not wait for callers who are not coming. Nor do callers
        of a model so cheap that they come back slower than it pays to wait.
        """
        latency = self.latency
        arrived = self._arrived_since_answer
        owed = self._answered_rows - arrived
        if owed <= 0:
            return None
        queued = max(ready_rows, 1)  # zero-row requests queue too
        per_row = latency.predict(queued) / queued
        worth = owed * per_row
        answered_at = self._answered_at
        if arrived == 0:
            return answered_at + worth
        if arrived == 1:
            return None  # one row back tells no pace yet: the usual gap rule decides
        if not self._returning:
            return None
        last = self.arrivals.last_arrival
        first = self._first_return_at
        if (last - first) / (arrived - 1) >= per_row:
            return None  # they come back too slowly to be worth waiting for
        return last + worth

    # ---- load shedding ----------------------------------------------------------------------

    def admit(
        self, now: float, rows: int, rows_ahead: int, slot_free_at: float, deadline: float | None = None
    ) -> float | None:
        """Whether a new request of `rows` rows can be served in time.

        `rows_ahead`: rows queued and not yet dispatched; `slot_free_at`: when a batch slot is
        predicted to be free (`now` or earlier if one is free); `deadline`: the request's
        `deadline(now, rows)` when the caller has it already. Returns None to admit it, or the
        suggested retry delay in seconds to reject it.
        """
        latency = self.latency
        if not latency.trusted or (rows_ahead == 0 and slot_free_at <= now):
            return None
        start = max(now, slot_free_at)
        if deadline is None:
            deadline = self.deadline(now, rows)
        budget = (deadline - now) * (1 - _ADMISSION_HEADROOM)
        size, _, full_batch_s = self._sized()
        if rows_ahead + rows <= size and start - now + full_batch_s / self.config.max_concurrent_batches <= budget:
            return None  # one batch drains it in time: the common case, decided without the sums below
        finish = start + self._drain_time(rows_ahead + rows)
        overshoot = finish - now - budget
        if overshoot <= 0:
            return None
        return max(overshoot, latency.predict(1))

    def is_late(self, now: float, batch_rows: int, deadline: float) -> bool:
        """Whether a request with `deadline` would miss it in a batch of `batch_rows` rows
        starting now (never while the latency model is not trusted)."""
        latency = self.latency
        if not latency.trusted:
            return False
        return now + latency.predict(batch_rows) > deadline

    def backlog_time(self, now: float, rows_ahead: int, slot_free_at: float) -> float:
        """Predicted time until `rows_ahead` queued rows have been served."""
        return max(slot_free_at - now, 0.0) + self._drain_time(rows_ahead)

    def _drain_time(self, rows: int, slots: int | None = None) -> float:
        """Predicted time to run `rows` rows in batches of the sustainable size, cautiously.

        Every batch is counted full, the last one too: when requests queue up, later arrivals
        fill the batch that carries the newest of these rows before it starts.
        """
        return self._drain_time_of(rows, self.sustainable_batch_size(), slots or self.config.max_concurrent_batches)

    def _drain_time_of(self, rows: int, size: int, slots: int) -> float:
        latency = self.latency
        if rows <= 0 or not latency.ready:
            return 0.0
        return math.ceil(rows / size) * latency.predict_upper(min(size, rows)) / slots
