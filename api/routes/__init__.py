"""One router per tag of the intake's OpenAPI document."""
