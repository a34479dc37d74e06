"""Where models come from: the Hub, pull, the store, model paths, the demo and tiny models."""
