"""`mixtral chat`: a conversation kept as messages, sent as exact ids, saved as it goes."""
