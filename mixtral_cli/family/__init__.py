"""The Mixtral family: catalog, prompt ids, instruct detection, the mistral-common check."""
