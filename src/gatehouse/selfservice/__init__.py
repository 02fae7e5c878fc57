"""Self-service flows, one package per flow: its use case (flow.py), routes (http.py), queue
handler (job.py) and wire schemas (schemas.py)."""
