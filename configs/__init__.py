"""Run configs: configs/<family>/<dataset>.py, each with get_config(arg)."""
