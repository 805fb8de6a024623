"""FSE on the synthetic demo dataset (`hvt-prepare demo`): what `hvt-demo` trains."""

from configs import common


def get_config(arg=None):
  arg = common.base_arg(arg)
  c = common.hse_base("fse", arg)
  common.apply_demo(c)
  if arg.runlocal:
    common.apply_runlocal(c)
  return c
