"""Exposition."""
