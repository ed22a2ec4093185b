"""Throwaway local services for the demo and the tests: a Synapse homeserver and a TCP proxy
that can fail on command, and `im-prober demo`, which runs the real daemon against them.
Nothing here is used by the daemon itself.

May import: everything but `cli` (the demo provisions with `setup` and runs the daemon;
nothing else imports the demo).
"""
