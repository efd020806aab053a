"""Defences: one module each, registered with `@register_defence`."""
