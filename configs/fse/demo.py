"""FSE on the synthetic demo dataset (`hvt-prepare demo`): what `hvt-demo` trains."""

from configs import common


def get_config(arg=None):
  return common.make_config("fse", arg, modality="frames", demo=True)
