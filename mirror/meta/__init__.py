"""The metadata store: what is about time and sharing (tag freshness), behind one interface."""
