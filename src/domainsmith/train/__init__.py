"""Training stages on transformers / PEFT."""
