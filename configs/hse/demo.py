"""HSE on the synthetic demo dataset (`hvt-prepare demo`): what `hvt-demo` trains."""

from configs import common


def get_config(arg=None):
  return common.make_config("hse", arg, modality="frames", demo=True)
