"""The shipped design spaces (YAML), installed as the package data of `search.spaces`: `--space full` finds full.yaml.

In a checkout this folder is `spaces/`; pyproject.toml maps it to `search.spaces` in the wheel, so a normal install
carries every space (`search.spacefile.shipped_spaces`).
"""
