"""actsweep: how FFN activations interact with normalization, learning rate and attention."""
