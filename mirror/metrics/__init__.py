"""What the mirror counts and exports: Prometheus metrics at `/metrics`, and what the status
page shows.

The upstream and pull-through layers report through the small hooks of `hooks`, which import no
metrics library: `prometheus_client` chooses its multiprocess mode when it is first imported, so
it is imported only where the server builds its app, after `mirror serve` has prepared the
directory its workers share (see `serving`).
"""
