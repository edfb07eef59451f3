"""The shipped YAML configs (``python -m pe_lightning fit --config configs/<name>.yaml``).

Installed as ``pe_lightning.configs``; find one with :func:`pe_lightning.run_config.shipped_config`.
"""
