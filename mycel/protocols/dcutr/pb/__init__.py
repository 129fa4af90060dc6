"""Generated protobuf module of DCUtR (``make proto`` regenerates it from holepunch.proto)."""
