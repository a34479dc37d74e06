"""Everything the user sees: the rich consoles, progress bars and summaries."""
