"""One module per `cardiossl` command; each exposes ``register(app)``."""
