"""The cache's content in an S3-compatible bucket (`--storage s3://BUCKET/PREFIX`)."""
