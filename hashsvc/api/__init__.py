"""The REST API adapter (FastAPI): `create_app(settings)` builds one worker's app.

Layout: app.py (factory, lifespan), runtime.py (per-worker services and the refresher
thread), deps.py (dependencies as Annotated aliases), auth.py (keys, scopes, rate
limit), limits.py (body cap, token buckets), uploads.py (in-memory media reading),
context.py (request ids, JSON logs, metrics middleware), metrics.py, errors.py (the only
exception -> status mapping), schemas.py (the contract), routes/ (one router per
resource). Business rules live in the core (matcher, policy, reports, keys, audit).
"""
