"""Writes service.log: 120 KB of JSON-lines records from a made-up web service, seeded.

The repetitive file of the adaptation bench: fixed keys, a few dozen endpoints and
users, increasing timestamps, request ids and latencies that no model can know in advance.
Run again, it writes the same bytes (random.Random(2026) and no clock).
"""

import json
import random
from pathlib import Path

ENDPOINTS = ["/api/v2/orders", "/api/v2/orders/{id}", "/api/v2/cart", "/api/v2/cart/items",
             "/api/v2/users/{id}", "/api/v2/users/{id}/settings", "/api/v2/search",
             "/api/v2/inventory/{id}", "/healthz", "/metrics", "/api/v2/payments",
             "/api/v2/payments/{id}/refund", "/api/v2/shipping/quote", "/login", "/logout"]
SERVICES = ["gateway", "orders-svc", "cart-svc", "users-svc", "search-svc", "payments-svc"]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-2"]
MESSAGES = {200: "request completed", 201: "resource created", 204: "no content",
            304: "not modified", 400: "validation failed: missing field 'quantity'",
            401: "token expired", 404: "resource not found", 409: "version conflict, retrying",
            429: "rate limit exceeded for client", 500: "upstream timeout after 3 retries",
            503: "circuit breaker open for payments-svc"}


def records(rng: random.Random, target_bytes: int):
    users = [f"u{rng.randrange(10**5, 10**6)}" for _ in range(40)]
    clock, written = 1_785_000_000_000, 0
    while written < target_bytes:
        clock += rng.randrange(5, 900)
        status = rng.choices(list(MESSAGES), weights=[60, 8, 4, 6, 4, 3, 4, 2, 2, 2, 1])[0]
        endpoint = rng.choice(ENDPOINTS).replace("{id}", str(rng.randrange(1000, 99999)))
        record = {"ts": clock, "level": "INFO" if status < 400 else "WARN" if status < 500
                  else "ERROR", "service": rng.choice(SERVICES), "region": rng.choice(REGIONS),
                  "method": "GET" if rng.random() < 0.6 else "POST", "path": endpoint,
                  "status": status, "latency_ms": round(rng.lognormvariate(3.2, 0.8), 1),
                  "user": rng.choice(users), "request_id": f"{rng.getrandbits(64):016x}",
                  "msg": MESSAGES[status]}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        written += len(line)
        yield line


if __name__ == "__main__":
    text = "".join(records(random.Random(2026), 120_000))
    Path(__file__).with_name("service.log").write_text(text)
