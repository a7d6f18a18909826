"""Real 1-bit inference on the CPU: export trained models to bit-packed files and run them."""
