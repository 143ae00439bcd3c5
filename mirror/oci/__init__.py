"""The protocol's vocabulary: digests, repository names, tags and media types, parsed once."""
