"""Unit tests: domain, flows on the memory adapters, courier, relay and the HTTP api in-process."""
