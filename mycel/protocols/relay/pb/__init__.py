"""Generated protobuf modules of circuit relay v2 (``make proto`` regenerates them from circuit.proto)."""
