"""The FAQ knowledge base and its search (issue 4)."""
