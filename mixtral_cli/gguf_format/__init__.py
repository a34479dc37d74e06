"""The GGUF format: header, hyperparameters, quantization types, repository naming."""
