"""The batching policy on made-up times: no asyncio, no sleeping, fully deterministic."""

from __future__ import annotations

import random

import pytest

from raystore._private.batch_config import BatchConfig
from raystore._private.batching.policy import ArrivalGauge, BatchPolicy, Dispatch, LatencyModel, Wait

MS = 0.001


def trained_model(a: float, b: float, sizes=(1, 4, 8, 16, 32, 64), rounds: int = 4) -> LatencyModel:
    model = LatencyModel()
    model.observe(1, 10.0)  # warm-up batch: ignored
    for _ in range(rounds):
        for n in sizes:
            model.observe(n, a + b * n)
    return model


def policy_with(a: float, b: float, **config) -> BatchPolicy:
    return BatchPolicy(BatchConfig(**config), latency=trained_model(a, b))


def feed_arrivals(policy: BatchPolicy, start: float, gap: float, count: int) -> float:
    now = start
    for _ in range(count):
        policy.on_arrival(now, 1)
        now += gap
    return now - gap


def synthetic_policy_just_answered(rows: int) -> tuple[BatchPolicy, float]:
    """The synthetic a = 20 ms, b = 0.5 ms/row model after a batch answered `rows` callers; returns
    the policy and when they were answered."""
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64)
    answered = feed_arrivals(policy, 0.0, 0.1 * MS, 64) + 60 * MS
    policy.on_batch_done(rows, 52 * MS, answered)
    return policy, answered


# ---- LatencyModel --------------------------------------------------------------------------------


def test_latency_model_recovers_a_and_b():
    model = trained_model(20 * MS, 0.5 * MS)
    assert model.a == pytest.approx(20 * MS, rel=1e-6)
    assert model.b == pytest.approx(0.5 * MS, rel=1e-6)
    assert model.predict(64) == pytest.approx(52 * MS)


def test_latency_model_ignores_the_warmup_batch_and_has_no_estimate_before():
    model = LatencyModel()
    assert not model.ready and model.predict(10) == 0.0
    model.observe(4, 5.0)
    assert not model.ready
    model.observe(4, 0.004)
    assert model.ready and not model.trusted


def test_latency_model_with_one_size_assumes_no_batching_benefit():
    model = LatencyModel()
    for _ in range(10):
        model.observe(8, 0.016)
    assert model.a == 0.0
    assert model.b == pytest.approx(0.002)


def test_latency_model_keeps_its_slope_when_a_steady_load_settles_on_one_size():
    model = trained_model(20 * MS, 0.5 * MS)
    for _ in range(200):
        model.observe(64, 56 * MS)  # the model got slower; every batch is now full
    assert model.predict(64) == pytest.approx(56 * MS, rel=1e-3)
    assert model.a > 15 * MS  # still sees the overhead that makes batching pay, not a line through 0
    assert model.b == pytest.approx(0.5 * MS, rel=0.25)


def test_latency_model_is_robust_to_noise_and_outliers():
    rng = random.Random(7)
    model = LatencyModel()
    for i in range(300):
        n = rng.choice([1, 2, 8, 16, 32, 64])
        seconds = 10 * MS + 1 * MS * n + rng.gauss(0, 1 * MS)
        if i % 50 == 25:
            seconds += 2.0  # a stall: garbage collection, a noisy neighbour
        model.observe(n, seconds)
    assert model.a == pytest.approx(10 * MS, abs=3 * MS)
    assert model.b == pytest.approx(1 * MS, rel=0.15)


def test_latency_model_follows_a_model_that_slows_down():
    model = trained_model(10 * MS, 1 * MS)
    for _ in range(30):
        for n in (1, 8, 32):
            model.observe(n, 30 * MS + 1 * MS * n)
    assert model.a == pytest.approx(30 * MS, rel=0.05)


def test_latency_model_never_goes_negative():
    model = LatencyModel()
    for n, t in [(1, 0.010), (10, 0.009), (20, 0.008), (30, 0.007)] * 3:
        model.observe(n, t)
    assert model.b == 0.0 and model.a > 0
    model = LatencyModel()
    for n, t in [(1, 0.001), (2, 0.001), (10, 0.030), (20, 0.070)] * 3:
        model.observe(n, t)
    assert model.a >= 0.0 and model.b > 0


def test_arrival_gauge_caps_long_gaps():
    gauge = ArrivalGauge()
    gauge.observe(0.0, 1, cap=0.02)
    gauge.observe(100.0, 1, cap=0.02)
    assert gauge.row_gap == pytest.approx(0.02)
    gauge.observe(100.004, 4, cap=0.02)
    assert gauge.row_gap < 0.02


# ---- decide ------------------------------------------------------------------------------------


def test_cold_start_dispatches_at_once():
    policy = BatchPolicy(BatchConfig(max_batch_size=64))
    feed_arrivals(policy, 0.0, 0.0001, 10)
    assert policy.decide(1.0, 1, True, 1.0, 11.0) == Dispatch(1)


def test_full_batch_dispatches_at_once():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=16)
    assert policy.decide(0.0, 40, True, 0.0, 10.0) == Dispatch(16)


def test_waits_for_a_fast_stream_when_overhead_is_large():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 0.5 * MS, 50)  # 2000 rows/s: 40 rows per overhead
    decision = policy.decide(now, 3, True, now - 1 * MS, now + 10.0)
    assert isinstance(decision, Wait)
    assert now < decision.until <= now + 20 * MS / 4 + 1e-9


def test_stops_waiting_once_the_batch_amortises_the_overhead():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 0.5 * MS, 50)
    assert policy.decide(now, 45, True, now - 10 * MS, now + 10.0) == Dispatch(45)


def test_does_not_wait_for_a_slow_stream():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 15 * MS, 20)  # a row every 15 ms: waiting would not pay
    assert policy.decide(now, 2, True, now, now + 10.0) == Dispatch(2)


def test_does_not_wait_when_overhead_is_negligible():
    policy = policy_with(0.01 * MS, 1 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 0.5 * MS, 50)
    assert policy.decide(now, 3, True, now, now + 10.0) == Dispatch(3)


def test_does_not_wait_when_incompatible_requests_follow():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 0.5 * MS, 50)
    assert policy.decide(now, 3, False, now, now + 10.0) == Dispatch(3)


def test_rows_left_over_wait_for_the_callers_just_answered():
    # 60 callers were answered 1 ms ago; 4 rows queued during that batch, the last long ago. A
    # closed loop's callers come back: the 4 rows wait for them instead of taking the model alone.
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 0.1 * MS, 64)
    now += 40 * MS
    policy.on_batch_done(60, 50 * MS, now - 1 * MS)
    decision = policy.decide(now, 4, True, now - 30 * MS, now + 10.0)
    assert isinstance(decision, Wait)
    assert decision.until == pytest.approx(now - 1 * MS + 52 * MS)  # at most a full batch past the answer
    # Every answered caller is back: the burst is over as usual.
    policy.on_arrival(now, 60)
    assert policy.decide(now + 5 * MS, 64 - 1, True, now - 30 * MS, now + 10.0) == Dispatch(63)


def test_answered_callers_are_awaited_though_one_slow_row_inflated_the_gap():
    # A closed loop's burst of returning callers with one 5 ms hiccup in it: the smoothed gap now
    # exceeds the patience, but 20 of the 64 answered callers are still to come, fast.
    policy, answered = synthetic_policy_just_answered(64)
    now = feed_arrivals(policy, answered + 10 * MS, 0.05 * MS, 40)
    now = feed_arrivals(policy, now + 5 * MS, 0.05 * MS, 4)
    assert policy.arrivals.row_gap >= 20 * MS / 45  # the gap rule alone would dispatch
    decision = policy.decide(now, 44, True, answered + 10 * MS, now + 10.0)
    assert isinstance(decision, Wait)
    assert decision.until >= now + 20 * 20 * MS / 44 * 0.99  # the 20 owed rows' worth


def test_the_pace_of_returning_callers_counts_from_the_first_of_them():
    # 10 rows left over; the answered callers start coming back after a 15 ms round trip, then come
    # fast. The silence before them says nothing about their pace.
    policy, answered = synthetic_policy_just_answered(54)
    now = feed_arrivals(policy, answered + 15 * MS, 0.1 * MS, 3)
    decision = policy.decide(now, 13, True, answered - 30 * MS, now + 10.0)
    assert isinstance(decision, Wait)
    assert decision.until > now + 1 * MS


def test_the_last_returning_caller_is_awaited_for_as_long_as_leaving_it_behind_costs():
    # 63 of 64 answered callers are back. Left behind, the last would wait out the 52 ms batch
    # about to run; the 63 would rather each wait up to 1/63 of that.
    policy, answered = synthetic_policy_just_answered(64)
    now = feed_arrivals(policy, answered + 10 * MS, 0.05 * MS, 63)
    decision = policy.decide(now, 63, True, answered + 10 * MS, now + 10.0)
    assert isinstance(decision, Wait)
    assert decision.until - now == pytest.approx((20 * MS + 63 * 0.5 * MS) / 63, rel=0.02)


def mlp_policy_in_a_closed_loop(silence: float, answered_rows: int = 64) -> tuple[BatchPolicy, float]:
    """A small MLP (a = 2.5 ms, b = 0.09 ms/row: a full batch in 8.3 ms) behind a proxy: its 64
    callers come back `silence` after each answer, 0.1 ms apart. Returns the policy after a few
    such cycles, and when the last batch answered `answered_rows` of them."""
    policy = policy_with(2.5 * MS, 0.09 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 0.1 * MS, 64)
    for _ in range(6):
        answered = now + 8.3 * MS
        policy.on_batch_done(64, 8.3 * MS, answered)
        now = feed_arrivals(policy, answered + silence, 0.1 * MS, 64)
    answered = now + 8.3 * MS
    policy.on_batch_done(answered_rows, 8.3 * MS, answered)
    return policy, answered


def test_callers_whose_round_trip_outlasts_a_full_batch_are_still_awaited():
    # Their round trip (11 ms) is longer than a full batch (8.3 ms), as it always has been: 40
    # are back, fast, and 24 are still to come.
    policy, answered = mlp_policy_in_a_closed_loop(silence=11 * MS)
    assert policy.latency.predict(64) < 11 * MS
    now = feed_arrivals(policy, answered + 11 * MS, 0.1 * MS, 40)
    decision = policy.decide(now, 40, True, answered + 11 * MS, now + 10.0)
    assert isinstance(decision, Wait)
    assert decision.until > now + 1 * MS


def test_a_burst_long_after_the_usual_round_trip_does_not_wait_for_the_answered_callers():
    # The callers usually come back 11 ms after an answer; three rows 200 ms after one are new
    # traffic, and get no more than the gap rule's patience.
    policy, answered = mlp_policy_in_a_closed_loop(silence=11 * MS)
    now = feed_arrivals(policy, answered + 200 * MS, 0.1 * MS, 3)
    decision = policy.decide(now, 3, True, answered + 200 * MS, now + 10.0)
    assert decision == Dispatch(3) or decision.until <= now + policy.latency.a / 4


def test_regular_pauses_in_open_loop_traffic_are_not_learned_as_a_round_trip():
    # After the closed loop, open-loop bursts of 3 rows every 200 ms, each answered together with
    # 5 other rows: the answered rows never all come back, so 200 ms is no round trip. The tenth
    # burst still gets no more than the gap rule's patience, not a wait for the 5 others.
    policy, answered = mlp_policy_in_a_closed_loop(silence=11 * MS)
    for _ in range(10):
        start = answered + 200 * MS
        now = feed_arrivals(policy, start, 0.1 * MS, 3)
        decision = policy.decide(now, 3, True, start, now + 10.0)
        answered = now + 3 * MS
        policy.on_batch_done(8, 3 * MS, answered)
    assert decision == Dispatch(3) or decision.until <= now + policy.latency.a / 4


def test_rows_left_over_wait_for_returning_callers_beyond_a_full_batch_past_the_answer():
    # 10 rows were left over when the last batch answered 54 callers. Those come back from 5 ms
    # on, 0.12 ms apart: the last of them 11.5 ms after the answer, later than a full batch (8.3
    # ms) past it. The full batch's time counts from the first of them, not from the answer: the
    # silence of their round trip was not a choice.
    policy, answered = mlp_policy_in_a_closed_loop(silence=5 * MS, answered_rows=54)
    head = answered - 5 * MS
    assert isinstance(policy.decide(answered + 4.9 * MS, 10, True, head, answered + 10.0), Wait)
    now = feed_arrivals(policy, answered + 5 * MS, 0.12 * MS, 41)
    decision = policy.decide(now, 51, True, head, now + 10.0)
    assert now > answered + policy.latency.predict(64)
    assert isinstance(decision, Wait)
    assert decision.until > now + 1 * MS


def test_a_cheap_model_does_not_hold_the_first_caller_back_for_the_others():
    # A model with a 30 us overhead, served in the ingress: requests come 200 us apart. The first
    # caller back after a batch of 20 runs at once; waiting for the other 19 would not pay.
    policy = policy_with(30e-6, 1e-6, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 200e-6, 40)
    policy.on_batch_done(20, 50e-6, now + 50e-6)
    now += 100e-6
    policy.on_arrival(now, 1)
    assert policy.decide(now, 1, True, now, now + 10.0) == Dispatch(1)


def test_zero_row_requests_left_over_after_an_answer_are_decided_on():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 0.1 * MS, 64)
    policy.on_batch_done(60, 50 * MS, now)
    assert isinstance(policy.decide(now + 1 * MS, 0, True, now, now + 10.0), (Wait, Dispatch))


def test_a_lone_request_long_after_an_answer_does_not_wait_for_those_callers():
    # Open-loop traffic: a burst was answered half a second ago and its callers never came back.
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 0.1 * MS, 64)
    policy.on_batch_done(64, 52 * MS, now + 60 * MS)
    now += 560 * MS
    policy.on_arrival(now, 1)
    decision = policy.decide(now, 1, True, now, now + 10.0)
    assert decision == Dispatch(1) or decision.until <= now + 20 * MS / 2  # no more than `patience`


def test_rows_left_over_run_when_no_batch_has_answered_anyone():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64)
    now = feed_arrivals(policy, 0.0, 0.1 * MS, 64) + 40 * MS
    assert policy.decide(now, 4, True, now - 30 * MS, now + 10.0) == Dispatch(4)


def test_waiting_respects_the_oldest_deadline():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64, max_latency_ms=50)
    now = feed_arrivals(policy, 0.0, 0.5 * MS, 50)
    head_deadline = now + 22 * MS  # the oldest request has 22 ms left, a batch of 4 needs 22 ms
    assert policy.decide(now, 3, True, now - 28 * MS, head_deadline) == Dispatch(3)


def test_batch_limit_shrinks_with_a_tight_budget():
    loose = policy_with(2 * MS, 1 * MS, max_batch_size=64, max_latency_ms=1000)
    tight = policy_with(2 * MS, 1 * MS, max_batch_size=64, max_latency_ms=20)
    assert loose.batch_limit(0.0, 1.0) == 64
    assert 10 <= tight.batch_limit(0.0, 0.020) <= 18
    assert tight.decide(0.0, 100, True, 0.0, 0.020).rows <= 18
    # An old head leaves less room, but batches never shrink below the sustainable size: the
    # batch that runs in half the budget (8 rows here). The old head is dropped instead.
    assert tight.sustainable_batch_size() == 8
    assert tight.batch_limit(0.0, 0.015) == 13
    assert tight.batch_limit(0.0, 0.005) == 8
    assert tight.is_late(0.0, 8, 0.005)


# ---- admission and shedding --------------------------------------------------------------------


def test_admits_everything_without_a_trusted_model():
    policy = BatchPolicy(BatchConfig(max_batch_size=4, max_latency_ms=10))
    for _ in range(3):
        policy.on_batch_done(4, 1.0)
    assert policy.admit(0.0, 1, 10_000, 5.0) is None
    assert not policy.is_late(100.0, 1, 0.0)


def test_admits_normal_load():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64, max_latency_ms=200)
    assert policy.admit(0.0, 1, 0, 0.0) is None  # idle
    assert policy.admit(0.0, 1, 63, 0.030) is None  # one batch running, one batch queued


def test_rejects_what_cannot_be_served_in_time():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64, max_latency_ms=200)
    retry_after = policy.admit(0.0, 1, 64 * 5, 0.030)  # five full batches ahead: ~290 ms
    assert retry_after is not None and retry_after > 0
    assert retry_after == pytest.approx(0.030 + 6 * 52 * MS - 0.200, abs=0.06)


def test_admission_agrees_with_the_drain_time_it_promises():
    # Whatever shortcut admission takes, a request is admitted exactly when the work ahead of it
    # and itself is predicted to drain within its latency budget (less the headroom).
    rng = random.Random(7)
    for _ in range(500):
        policy = policy_with(
            rng.uniform(0, 30) * MS,
            rng.uniform(0, 1) * MS,
            max_batch_size=rng.choice((8, 64)),
            max_latency_ms=rng.choice((50, 200)),
            max_concurrent_batches=rng.choice((1, 2)),
        )
        rows, ahead, busy_for = rng.randint(1, 8), rng.randint(0, 200), rng.uniform(0, 0.1)
        budget = (policy.deadline(0.0, rows) - 0.0) * 0.95
        fits = busy_for + policy.backlog_time(busy_for, ahead + rows, busy_for) <= budget
        assert (policy.admit(0.0, rows, ahead, busy_for) is None) == (fits or (ahead == 0 and busy_for <= 0))


def test_a_request_too_big_for_the_budget_is_served_when_nothing_is_ahead():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64, max_latency_ms=50)
    assert policy.admit(0.0, 1000, 0, 0.0) is None
    assert policy.deadline(0.0, 1000) > 0.050
    assert not policy.is_late(0.0, 1000, policy.deadline(0.0, 1000))


def test_is_late_when_the_batch_about_to_start_would_end_after_the_deadline():
    policy = policy_with(20 * MS, 0.5 * MS, max_batch_size=64, max_latency_ms=100)
    assert not policy.is_late(0.070, 1, 0.100)
    assert policy.is_late(0.070, 40, 0.100)
    assert policy.is_late(0.090, 1, 0.100)
    assert not BatchPolicy(BatchConfig()).is_late(100.0, 1, 0.0)  # no trusted estimate: never late
