"""offload's template tags: ``{% load offload_tags %}``."""
