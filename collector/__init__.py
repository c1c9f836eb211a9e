"""VenueGuard collector: verifies, keeps and judges what the agents report."""

__version__ = "0.1.0"
