"""Generated protobuf modules for keys, signed envelopes and peer records (``make proto``)."""
