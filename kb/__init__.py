"""The FAQ knowledge base and its search."""
