"""One router per resource; each route is one engine call plus the translation to JSON."""
