"""The demo services (``checkout`` and its dependency ``inventory``) and their fault scenarios,
used by ``selfheal dev`` and the tests."""
