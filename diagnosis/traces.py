"""Where an error trace's failure began, pure: the span tree, the origin, the propagation path
and the services affected; then, over the traces of a fault's window, the dominant origin.

The origin of one trace is the deepest error span none of whose children failed: an error its
callers inherited, not one it inherited. Real traces are ragged, so:

- **Missing parents.** A span whose parent was not received (sampled out, exported by a service
  that never sent it, pruned) is an orphan. It is hung under the trace's root when the trace has
  one (``Node.linked``; its depth is then a lower bound), else it is a root of its own. Parent
  cycles (corrupt ids) are broken at their earliest span, so that every span is in the tree.
- **Clock skew.** Times from different services come from different clocks. The tree gives the
  order (depth first, causality); times break ties only, and are first corrected per service the
  way Jaeger's skew adjuster does: a child that does not fit inside its parent is centred in it,
  and every span of that child's service is shifted by the same amount.
- **Determinism.** The result does not depend on the order spans arrive in: ties end on the span
  id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from selfheal.domain.spans import Span

__all__ = [
    "Node",
    "OriginSummary",
    "SpanTree",
    "TraceOrigin",
    "build_tree",
    "origin_of",
    "summarize",
]


@dataclass(frozen=True)
class Node:
    span: Span
    parent: str | None
    """the parent's span id in the tree (None for a root)"""
    depth: int
    linked: bool = False
    """the real parent is missing: hung under the trace's root"""
    start: float = 0.0
    """the start corrected for clock skew (see the module's docstring)"""


@dataclass(frozen=True)
class SpanTree:
    trace_id: str
    nodes: dict[str, Node]
    children: dict[str, list[str]]
    roots: list[str]

    def path_up(self, span_id: str) -> list[str]:
        """Span ids from ``span_id`` up to its root."""
        path: list[str] = []
        current: str | None = span_id
        while current is not None and len(path) <= len(self.nodes):
            path.append(current)
            current = self.nodes[current].parent
        return path


@dataclass(frozen=True)
class TraceOrigin:
    trace_id: str
    span: Span
    depth: int
    start: float
    """the origin's skew-corrected start"""
    path: tuple[str, ...]
    """services from the origin up to the root, consecutive repeats folded"""
    affected: tuple[str, ...]
    """services with an error span, the origin's first, then deepest first"""


@dataclass(frozen=True)
class OriginSummary:
    """The dominant origin over a window's error traces."""

    traces: int
    """error traces looked at"""
    service: str
    share: float
    """of the error traces, the share whose origin is ``service``"""
    span: str
    exception: str
    """the origin's exception type ("" when it recorded none)"""
    message: str
    """the exception's message, else the span's status message"""
    attributes: dict[str, str]
    path: list[str]
    affected: list[str]
    """services with an error span in any of the traces, the origin's first, most frequent next"""
    example: TraceOrigin
    origins: dict[str, int] = field(default_factory=dict)
    """error traces per origin service"""


def _parents(by_id: Mapping[str, Span]) -> dict[str, str | None]:
    """Each span's parent within the trace (None: none or missing), parent cycles broken at
    their earliest span."""
    parent: dict[str, str | None] = {}
    for span_id, span in by_id.items():
        declared = span.parent_span_id
        parent[span_id] = declared if declared and declared in by_id else None
    done: set[str] = set()
    for span_id in sorted(by_id):
        path: list[str] = []
        on_path: set[str] = set()
        current: str | None = span_id
        while current is not None and current not in done:
            if current in on_path:
                cycle = path[path.index(current) :]
                first = min(cycle, key=lambda s: (by_id[s].start, s))
                parent[first] = None
                break
            path.append(current)
            on_path.add(current)
            current = parent[current]
        done.update(path)
    return parent


def _skew_shifts(
    by_id: Mapping[str, Span], children: Mapping[str, list[str]], roots: Sequence[str]
) -> dict[str, float]:
    """Per service, what to add to its times to agree with the root's clock."""
    shift: dict[str, float] = {}
    for root in roots:
        shift.setdefault(by_id[root].service, 0.0)
    stack = list(roots)
    while stack:
        parent = by_id[stack.pop()]
        base = shift.get(parent.service, 0.0)
        for child_id in children.get(parent.span_id, []):
            child = by_id[child_id]
            stack.append(child_id)
            if child.service in shift:
                continue
            fits = parent.start <= child.start and child.end <= parent.end
            if fits:
                shift[child.service] = base
            else:
                slack = max((parent.end - parent.start) - (child.end - child.start), 0.0)
                shift[child.service] = base + parent.start + slack / 2 - child.start
    return shift


def build_tree(spans: Sequence[Span]) -> SpanTree:
    """The tree of one trace's spans (a repeated span id counts once: the first)."""
    by_id: dict[str, Span] = {}
    for span in spans:
        by_id.setdefault(span.span_id, span)
    trace_id = spans[0].trace_id if spans else ""
    parent = _parents(by_id)
    declared_roots = sorted(
        (s for s, span in by_id.items() if parent[s] is None and not span.parent_span_id),
        key=lambda s: (by_id[s].start, s),
    )
    orphans = sorted(s for s, span in by_id.items() if parent[s] is None and span.parent_span_id)
    linked: set[str] = set()
    if declared_roots:
        # the trace root: the first span without a declared parent
        for orphan in orphans:
            parent[orphan] = declared_roots[0]
            linked.add(orphan)
        roots = declared_roots
    else:
        roots = sorted(orphans, key=lambda s: (by_id[s].start, s))
    children: dict[str, list[str]] = {}
    for span_id in sorted(by_id, key=lambda s: (by_id[s].start, s)):
        above = parent[span_id]
        if above is not None:
            children.setdefault(above, []).append(span_id)
    shift = _skew_shifts(by_id, children, roots)
    nodes: dict[str, Node] = {}
    stack = [(root, 0) for root in roots]
    while stack:
        span_id, depth = stack.pop()
        span = by_id[span_id]
        nodes[span_id] = Node(
            span=span,
            parent=parent[span_id],
            depth=depth,
            linked=span_id in linked,
            start=span.start + shift.get(span.service, 0.0),
        )
        stack.extend((child, depth + 1) for child in children.get(span_id, []))
    return SpanTree(trace_id, nodes, children, roots)


def _fold(services: Sequence[str]) -> tuple[str, ...]:
    folded: list[str] = []
    for service in services:
        if not folded or folded[-1] != service:
            folded.append(service)
    return tuple(folded)


def origin_of(spans: Sequence[Span]) -> TraceOrigin | None:
    """The origin of one trace's failure; None when no span of it failed."""
    tree = build_tree(spans)
    nodes = tree.nodes
    candidates = [
        node
        for span_id, node in nodes.items()
        if node.span.error and not any(nodes[c].span.error for c in tree.children.get(span_id, []))
    ]
    if not candidates:
        return None
    origin = min(candidates, key=lambda n: (-n.depth, n.start, n.span.span_id))
    path = _fold([nodes[s].span.service for s in tree.path_up(origin.span.span_id)])
    errors = sorted(
        (n for n in nodes.values() if n.span.error),
        key=lambda n: (-n.depth, n.start, n.span.span_id),
    )
    affected = dict.fromkeys([origin.span.service, *(n.span.service for n in errors)])
    return TraceOrigin(
        trace_id=tree.trace_id,
        span=origin.span,
        depth=origin.depth,
        start=origin.start,
        path=path,
        affected=tuple(affected),
    )


def _exception(span: Span) -> tuple[str, str]:
    for event in span.exceptions:
        if event.get("type") or event.get("message"):
            return event.get("type", ""), event.get("message", "") or span.message
    return "", span.message


def summarize(traces: Sequence[Sequence[Span]]) -> OriginSummary | None:
    """The most frequent origin service over ``traces`` (ties: the deeper on average, then the
    earlier), with its most frequent span and exception; None when no trace holds an error."""
    origins = [o for o in (origin_of(spans) for spans in traces if spans) if o is not None]
    if not origins:
        return None
    counts = Counter(o.span.service for o in origins)

    def rank(service: str) -> tuple[int, float, float, str]:
        mine = [o for o in origins if o.span.service == service]
        mean_depth = sum(o.depth for o in mine) / len(mine)
        return (-counts[service], -mean_depth, min(o.span.start for o in mine), service)

    service = min(counts, key=rank)
    mine = [o for o in origins if o.span.service == service]
    kinds = Counter((o.span.name, _exception(o.span)[0]) for o in mine)
    (name, exception), _ = min(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    example = min(
        (o for o in mine if (o.span.name, _exception(o.span)[0]) == (name, exception)),
        key=lambda o: (o.span.start, o.trace_id),
    )
    paths = Counter(o.path for o in mine)
    path, _ = min(paths.items(), key=lambda kv: (-kv[1], kv[0]))
    affected_counts = Counter(s for o in origins for s in o.affected)
    others = sorted(
        (s for s in affected_counts if s != service), key=lambda s: (-affected_counts[s], s)
    )
    affected = [service, *others]
    return OriginSummary(
        traces=len(origins),
        service=service,
        share=counts[service] / len(origins),
        span=name,
        exception=exception,
        message=_exception(example.span)[1],
        attributes=dict(example.span.attributes),
        path=list(path),
        affected=affected,
        example=example,
        origins=dict(counts.most_common()),
    )
