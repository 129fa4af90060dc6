"""Layer 0 of the stack: keys, peer ids, identities, signed records, multiaddr helpers, varints and
framing, errors, host events, and the abstract classes every layer implements (:mod:`mycel.core.abc`)."""
