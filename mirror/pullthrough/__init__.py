"""Pull-through policy: when to answer from cache, when and how to ask the upstream."""
