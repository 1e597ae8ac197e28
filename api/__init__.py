"""The HTTP intake: one FastAPI router per tag; routes talk only to the door (``healings``)."""
