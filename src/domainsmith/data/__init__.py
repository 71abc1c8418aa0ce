"""Reading, rendering and checking training data."""
