"""The cache's life: recency of use, its size against the cap, eviction, and what the upkeep
commands (ls, du, rm, gc, verify) see and do."""
