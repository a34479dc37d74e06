"""How much a model loses against a reference (`mixtral eval`): the statistics of llama-perplexity's KL
divergence report, and how often the routers choose the same experts, over a text scored in chunks."""

DEFAULT_CTX = 512  # tokens per chunk: llama-perplexity's, and published tables'
