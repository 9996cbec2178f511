"""The ready-made portal: Django settings, URLs and ASGI/WSGI entry points built around offload."""
