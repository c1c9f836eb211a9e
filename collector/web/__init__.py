"""The collector's web pages and JSON API."""
