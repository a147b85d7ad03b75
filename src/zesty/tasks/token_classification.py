"""token_classification task (being written)."""
