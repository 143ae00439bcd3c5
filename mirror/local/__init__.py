"""Local namespaces: repositories that take pushes, served from the cache's store beside the
mirrored registries (`store` the links, `uploads` the sessions, `blobs` and `manifests` the
policy, `registry` the whole), and the catalog of everything the endpoint holds."""
