"""VenueGuard agent: watches a venue's exam LAN host and reports over MQTT with nothing lost."""

__version__ = "0.1.0"
