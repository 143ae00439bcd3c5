"""The cache on disk: content-addressed blobs and manifests, tag records and the spool."""
