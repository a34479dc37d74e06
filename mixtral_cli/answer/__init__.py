"""The answer: one request becomes one job (shapes, grammars, model-card requests, summaries, reports)."""
