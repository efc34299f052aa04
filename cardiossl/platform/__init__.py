"""What every run shares: the registry, configs, tracking, training loop and the CLI."""
