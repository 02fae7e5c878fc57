"""Issue 17: Gatehouse beside a peer (Keycloak, `compare.py`) and beside its ceiling (a bare ASGI
route on the api's server stack, `ceiling.py`), each measured in the same run with the same wrk
settings. `benchmarks/run.py` runs them as the groups "peers" and "ceiling"."""
