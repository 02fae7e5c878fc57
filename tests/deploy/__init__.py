"""The deploy tests: the Dockerfile and compose.yaml built and run with podman (conftest.py)."""
