"""The ``onebit export``, ``onebit infer`` and ``onebit bench`` sub-commands (one module each)."""
