"""question_answering task (being written)."""
