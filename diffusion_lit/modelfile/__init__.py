"""A trained model as files: its spec (plain data, checked against a fixed table of this
project's classes), training checkpoints, export folders and model cards."""
