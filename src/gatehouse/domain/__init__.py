"""Pure domain: values, rules and crypto primitives; no I/O and nothing else of Gatehouse."""
