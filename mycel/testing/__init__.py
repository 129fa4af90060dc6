"""Test helpers users can use too: in-memory host pairs (:mod:`~mycel.testing.hosts`), connection
conformance checks (:mod:`~mycel.testing.conformance`) and raw/secure connection doubles."""
