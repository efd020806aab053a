"""Harmful fine-tuning attacks: named budgets, each a preset of (samples, lr, epochs, batch)."""
