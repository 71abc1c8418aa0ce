"""Generation with a model and optional adapter."""
