"""Unit tests: domain, flows on test doubles and embedded implementations, courier, relay, and
the HTTP api in-process."""
