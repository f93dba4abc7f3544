"""The named model configs, `<name>.json`, shipped as package data (read by training.model_config)."""
