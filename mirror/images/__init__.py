"""Whole images moved into and out of the cache: prefetched from upstreams, exported to an OCI
image layout archive, imported from one."""
