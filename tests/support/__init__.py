"""Test infrastructure shared by the functional and end-to-end suites: real upstream registries,
a token service for them, and images built in memory."""
