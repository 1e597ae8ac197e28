"""The demo target service and its fault scenarios, used by ``selfheal dev`` and the tests."""
