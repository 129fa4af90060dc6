"""Unit tests of the gossipsub (pubsub) cores."""
