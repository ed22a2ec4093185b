"""Provisioning commands."""
