"""Outbound HTTP: the upstream registry client, its auth challenges and token cache."""
