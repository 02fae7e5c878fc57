"""The HTTP api: FastAPI app, wire schemas, one router per flow."""
