"""Where the HTTP API answers: shared by the server and the clients that call it."""
API_PREFIX = "/api/v1"
HEALTH_PATH = f"{API_PREFIX}/health"
QUERY_PATH = f"{API_PREFIX}/query"
METRICS_PATH = "/metrics"
# The operator's live page, and the files it loads (shipped in api/static).
PAGE_PATH = "/"
PAGE_ASSETS_PATH = "/static"
