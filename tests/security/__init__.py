"""Abuse and security tests: secrets, downloads, malformed input, mentions and tenants."""
