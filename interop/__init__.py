"""Interop harness: real go / js / py-libp2p peers and the adapters that run them (see README.md)."""
