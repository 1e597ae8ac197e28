"""``selfheal dev``: the whole stack on one machine (Temporal dev server, Postgres, the worker,
the intake, selfheal's process supervisor and a demo target with fault injection)."""
