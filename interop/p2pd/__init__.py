"""A client for the libp2p daemon (p2pd) control protocol, and helpers for the go adapter."""
