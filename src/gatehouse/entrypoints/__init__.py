"""Processes: the HTTP api, the relay, the courier and the command line that starts them."""
