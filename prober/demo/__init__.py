"""Throwaway local services for the demo and the tests: a Synapse homeserver and a TCP proxy
that can fail on command. Nothing here is used by the daemon itself."""
