"""The promises of DESIGN.md, each tried by a suite that sets out to break it: budget (never spend past a
budget, under any concurrency), faults (PostgreSQL, Redis and workers lost under load)."""
