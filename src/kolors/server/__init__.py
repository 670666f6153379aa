"""``kolors serve``: one warm model behind three HTTP APIs (native jobs, OpenAI Images, AUTOMATIC1111) on a database
queue that loses nothing. See docs/server.md.

Modules, one job each: settings (what the server is told), database (tables, engines), jobqueue (claims and
leases), events (in-process progress and cancellation), storage (files), references (API JSON -> requests),
worker (the model's thread), retention, auth, api_errors, metrics, job_view, native_api, openai_api, a1111_api,
app (the FastAPI application).
"""
