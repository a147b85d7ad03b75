"""fill_mask task (being written)."""
