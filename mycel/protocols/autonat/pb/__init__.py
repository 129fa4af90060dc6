"""Generated AutoNAT v1 and v2 protobuf modules (``make proto`` regenerates them from the ``.proto`` files)."""
