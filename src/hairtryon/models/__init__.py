"""Network architectures (pure PyTorch). Weights are loaded by the stage modules, never here."""
