"""im-prober: synthetic availability prober for instant messaging services."""

__version__ = "0.1.0"
