"""FLAT on the synthetic many-event demo: ``configs/hammer/demo.py`` with the flat model."""

from configs.hammer import demo


def get_config(arg=None):
  return demo.make("flat", arg)
