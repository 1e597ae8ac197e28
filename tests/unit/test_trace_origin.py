"""The origin of an error trace (diagnosis/traces.py): pure logic, and properties over random
trees with shuffled spans, dropped parents, parent cycles and skewed clocks."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from selfheal.detection.parsers import ErrorSpan
from selfheal.diagnosis.traces import build_tree, origin_of, summarize

TRACE = "0af7651916cd43dd8448eb211c80319c"


def sp(
    span_id: str,
    parent: str,
    service: str,
    name: str,
    start: float,
    end: float,
    *,
    error: bool = False,
    message: str = "",
    exception: tuple[str, str] | None = None,
    trace_id: str = TRACE,
    attributes: dict[str, str] | None = None,
) -> ErrorSpan:
    exceptions = ({"type": exception[0], "message": exception[1]},) if exception else ()
    return ErrorSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        service=service,
        name=name,
        start=start,
        end=end,
        error=error,
        message=message,
        exceptions=exceptions,
        attributes=attributes or {},
    )


def checkout_inventory(trace_id: str = TRACE) -> list[ErrorSpan]:
    """checkout calls inventory; inventory's query times out, and checkout fails because of it."""
    return [
        sp("c1", "", "checkout", "POST /checkout", 0.0, 1.0, error=True, message="HTTP 500",
           trace_id=trace_id),
        sp("c2", "c1", "checkout", "GET inventory", 0.1, 0.9, error=True, message="HTTP 503",
           trace_id=trace_id),
        sp("i1", "c2", "inventory", "GET /stock", 0.15, 0.85, error=True,
           exception=("TimeoutError", "pool exhausted"), trace_id=trace_id,
           attributes={"feature_flag.key": "new-cache"}),
        sp("i2", "i1", "inventory", "SELECT stock", 0.2, 0.8, trace_id=trace_id),
    ]  # fmt: skip


def test_the_origin_is_the_deepest_error_with_healthy_children() -> None:
    origin = origin_of(checkout_inventory())
    assert origin is not None
    assert (origin.span.span_id, origin.span.service, origin.depth) == ("i1", "inventory", 2)
    assert origin.path == ("inventory", "checkout")
    assert origin.affected == ("inventory", "checkout")


def test_a_trace_without_errors_has_no_origin() -> None:
    healthy = [sp("a", "", "web", "GET /", 0, 1), sp("b", "a", "db", "SELECT", 0.1, 0.2)]
    assert origin_of(healthy) is None
    assert origin_of([]) is None
    assert summarize([healthy, []]) is None


def test_a_missing_parent_hangs_the_orphan_under_the_root() -> None:
    # the gateway span between checkout and inventory was never received
    spans = [
        sp("c1", "", "checkout", "POST /checkout", 0.0, 1.0, error=True),
        sp("i1", "gw", "inventory", "GET /stock", 0.2, 0.8, error=True,
           exception=("TimeoutError", "pool exhausted")),
    ]  # fmt: skip
    tree = build_tree(spans)
    assert tree.roots == ["c1"]
    assert tree.nodes["i1"].linked and tree.nodes["i1"].parent == "c1"
    origin = origin_of(spans)
    assert origin is not None and origin.span.span_id == "i1"
    assert origin.path == ("inventory", "checkout")


def test_without_any_root_orphans_are_roots_of_their_own() -> None:
    spans = [
        sp("i1", "gone", "inventory", "GET /stock", 5.0, 6.0, error=True),
        sp("i2", "i1", "inventory", "SELECT", 5.1, 5.2, error=True),
        sp("p1", "gone2", "payments", "charge", 1.0, 2.0),
    ]
    tree = build_tree(spans)
    assert tree.roots == ["p1", "i1"]
    origin = origin_of(spans)
    assert origin is not None and origin.span.span_id == "i2"
    assert origin.path == ("inventory",)


def test_clock_skew_child_starting_before_its_parent() -> None:
    # inventory's clock is 10 s behind: its span seems to start before its caller's.
    # payments really started first; raw times would say inventory.
    spans = [
        sp("c1", "", "checkout", "POST /checkout", 100.0, 102.0, error=True),
        sp("i1", "c1", "inventory", "GET /stock", 90.1, 91.0, error=True),
        sp("p1", "c1", "payments", "POST /charge", 100.05, 100.5, error=True),
    ]
    tree = build_tree(spans)
    assert tree.nodes["i1"].start > tree.nodes["c1"].start  # moved inside its parent
    origin = origin_of(spans)
    assert origin is not None and origin.span.service == "payments"
    # depth (causality) beats any clock: a deeper error wins however early the other looks
    deeper = [*spans, sp("i2", "i1", "inventory", "SELECT", 90.2, 90.9, error=True)]
    origin = origin_of(deeper)
    assert origin is not None and origin.span.span_id == "i2"


def test_summary_over_a_window_of_traces() -> None:
    traces = [checkout_inventory(f"{n:032x}") for n in range(1, 4)]
    traces.append(
        [
            sp("x1", "", "checkout", "POST /checkout", 0, 1, error=True, trace_id="f" * 32),
            sp(
                "x2",
                "x1",
                "payments",
                "POST /charge",
                0.1,
                0.5,
                error=True,
                message="card declined",
                trace_id="f" * 32,
            ),
        ]
    )
    traces.append([sp("h1", "", "checkout", "GET /", 0, 1, trace_id="e" * 32)])  # no error
    summary = summarize(traces)
    assert summary is not None
    assert (summary.traces, summary.service, summary.share) == (4, "inventory", 0.75)
    assert (summary.span, summary.exception, summary.message) == (
        "GET /stock",
        "TimeoutError",
        "pool exhausted",
    )
    assert summary.attributes == {"feature_flag.key": "new-cache"}
    assert summary.path == ["inventory", "checkout"]
    assert summary.affected == ["inventory", "checkout", "payments"]
    assert summary.origins == {"inventory": 3, "payments": 1}


# --------------------------------------------------------------------------------- properties

SERVICES = ["web", "api", "db", "cache"]


@st.composite
def random_traces(draw: st.DrawFn) -> tuple[list[ErrorSpan], list[ErrorSpan]]:
    """A random tree (timed consistently, then each service's clock skewed), with some spans
    dropped; returns (kept spans, the same shuffled)."""
    n = draw(st.integers(1, 25))
    skew = {s: draw(st.floats(-30, 30)) for s in SERVICES}
    spans: list[ErrorSpan] = []
    bounds: list[tuple[float, float]] = []
    for i in range(n):
        parent = draw(st.integers(0, i - 1)) if i else -1
        service = draw(st.sampled_from(SERVICES))
        lo, hi = bounds[parent] if parent >= 0 else (1000.0, 1010.0)
        a, b = sorted((draw(st.floats(0, 1)), draw(st.floats(0, 1))))
        start, end = lo + a * (hi - lo), lo + b * (hi - lo)
        bounds.append((start, end))
        spans.append(
            sp(
                f"s{i:02}",
                f"s{parent:02}" if parent >= 0 else "",
                service,
                f"op{i}",
                start + skew[service],
                end + skew[service],
                error=draw(st.booleans()),
            )
        )
    dropped = draw(st.sets(st.integers(0, n - 1), max_size=n - 1))
    kept = [s for i, s in enumerate(spans) if i not in dropped]
    shuffled = draw(st.permutations(kept))
    return kept, list(shuffled)


@settings(max_examples=150, deadline=None)
@given(random_traces())
def test_origin_is_an_error_span_with_no_erroring_child(
    traces: tuple[list[ErrorSpan], list[ErrorSpan]],
) -> None:
    kept, shuffled = traces
    tree = build_tree(shuffled)
    assert set(tree.nodes) == {s.span_id for s in kept}
    origin = origin_of(shuffled)
    if not any(s.error for s in kept):
        assert origin is None
        return
    assert origin is not None and origin.span.error
    real_children = [s for s in kept if s.parent_span_id == origin.span.span_id]
    assert not any(child.error for child in real_children)
    assert not any(tree.nodes[c].span.error for c in tree.children.get(origin.span.span_id, []))
    assert origin.path[0] == origin.span.service
    assert origin.affected[0] == origin.span.service
    # the order spans arrive in changes nothing
    again = origin_of(kept)
    assert again is not None and again.span.span_id == origin.span.span_id


@settings(max_examples=200, deadline=None)
@given(
    parents=st.lists(st.integers(-1, 12), min_size=1, max_size=12),
    errors=st.lists(st.booleans(), min_size=12, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_corrupt_parents_and_cycles_never_crash(
    parents: list[int], errors: list[bool], seed: int
) -> None:
    spans = [
        sp(f"s{i}", f"s{p}" if p >= 0 else "", random.Random(seed + i).choice(SERVICES), "op",
           float(i), float(i) + 1, error=errors[i])
        for i, p in enumerate(parents)
    ]  # fmt: skip
    random.Random(seed).shuffle(spans)
    tree = build_tree(spans)
    assert set(tree.nodes) == {s.span_id for s in spans}
    for span_id in tree.nodes:
        assert tree.path_up(span_id)[-1] in tree.roots
    origin = origin_of(spans)
    assert (origin is None) == (not any(s.error for s in spans))
    if origin is not None:
        assert not any(tree.nodes[c].span.error for c in tree.children.get(origin.span.span_id, []))
    assert summarize([spans, spans]) is not None or origin is None
