"""mixtral: run Mistral AI's Mixtral mixture-of-experts models on your own machine."""

__version__ = "0.1.0"
