"""Inbound HTTP: the `/v2/` routes, thin handlers, middlewares and response builders."""
