"""Replicas that act as one cache: hosts that share no disk, but one Redis, fetch each missing
blob from the upstream once. A lease in Redis names the replica that fetches it; every other
replica streams the blob from that one (through its peer endpoint) as its bytes arrive."""
